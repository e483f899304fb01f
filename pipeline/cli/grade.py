"""`kefu grade` and `kefu demo`: one grading path, its dry-run forecast and the summary table it prints."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.checks.checker import DEFAULT_LEXICONS
from pipeline.cli import options
from pipeline.cli.batch import print_estimate
from pipeline.cli.console import (
    NEEDS_REVIEW_NOTE,
    announce,
    console,
    fail,
    fail_run_folder,
    grading_progress,
    log_to,
    out,
    rate_limit_note,
    read_ids,
    redaction_text,
    stopped,
    tokens_text,
    warn_small_sample,
)
from pipeline.consistency.sample_size import MIN_LABELLED, SampleSize
from pipeline.errors import ConfigError, KefuError
from pipeline.grading.dryrun import DRY_RUN_DIR, PROMPT_SAMPLE, DryRunFiles
from pipeline.grading.endpoints import ResolvedEndpoint
from pipeline.grading.job import GradeJob, JobResult, read_job_inputs, run_job, select
from pipeline.grading.prompting import PromptSet
from pipeline.grading.schema import COMPACT_MAX_EVIDENCE, COMPACT_QUOTE_CHARS, COMPACT_REASONING_CHARS
from pipeline.grading.settings import Settings, load_settings
from pipeline.inputs.files import FORMAT_BY_SUFFIX, count_jsonl_lines
from pipeline.outputs.headings import summary_headings
from pipeline.paths import CHECKOUT_DIR as REPO
from pipeline.rubric.load import load_rubric
from pipeline.store.store import DB_NAME


def _print_summary(result: JobResult, job: GradeJob) -> None:
    s = result.summary
    table = Table(title="kefu grade", show_header=False)
    table.add_row("评分模型", result.model)
    table.add_row("读入会话", str(s.transcripts))
    table.add_row("本次评分", str(s.graded))
    table.add_row("未评分", str(s.unscored) + ("  （加 --retry-failed 重试）" if s.unscored else ""))
    table.add_row("已完成（续跑跳过）", str(s.skipped))
    if s.pending_batch:
        table.add_row("在未收取的批次中",
                      f"{s.pending_batch}  (已跳过，不重复付费；用 kefu batch collect 收取，"
                      "或加 --include-pending-batch 在线评分)")
    table.add_row("拒收", str(s.rejected) + (f"  （见 {result.rejects_jsonl}）" if s.rejected else ""))
    table.add_row("令牌数", tokens_text(s.prompt_tokens, s.cached_tokens, s.completion_tokens))
    table.add_row("用时", f"{s.elapsed_s:.1f} 秒")
    if (limited := rate_limit_note(s)) is not None:
        table.add_row("限流", limited)
    table.add_row("隐私脱敏", redaction_text(s.redacted, s.redactions))
    if result.needs_review:
        table.add_row("待复核", f"{result.needs_review}  {NEEDS_REVIEW_NOTE}")
    headings = summary_headings(load_rubric(job.rubric_path), "agent")  # the words of `kefu summary`
    for dim, mean in result.dimension_means.items():
        table.add_row(headings.get(f"mean_{dim}", dim), "—" if mean is None else f"{mean:.2f}")
    out.print(table)
    out.print(f"评分 scores: {result.scores_csv}\n逐项 grades: {result.grades_jsonl}\n"
              f"检查 checks: {result.checks_jsonl}\n存储 store:  {job.out_dir / DB_NAME}")
    if result.judge is not None:
        out.print(escape(result.judge.note))
    if not s.transcripts and not s.rejected:  # a wrong folder or extension: say so rather than report a clean run
        console.print(f"[yellow]没有可评分的对话 (nothing to grade):[/yellow] 输入中没有会话（读取的文件类型："
                      f"{', '.join(FORMAT_BY_SUFFIX)}；文件夹会递归查找）")


def _vouched(check_dir: Path, job: GradeJob, settings: Settings) -> Callable[[ResolvedEndpoint], None]:
    """An endpoint callback that refuses (ConfigError) a judge other than the one the check in `check_dir` measured."""
    from pipeline.grading.fingerprint import JudgeFingerprint, endpoint_name, fingerprint_differences
    from pipeline.report.result_file import load_judge

    checked = load_judge(check_dir)
    rubric = load_rubric(job.rubric_path)
    template_hash = PromptSet(rubric.language, job.prompts_dir).template_hash

    def check(endpoint: ResolvedEndpoint) -> None:
        now = JudgeFingerprint(
            model=endpoint.model, endpoint=endpoint_name(endpoint.endpoint.base_url, local=endpoint.local),
            rubric_hash=rubric.content_hash, template_hash=template_hash, temperature=settings.temperature,
            seed=settings.seed, max_tokens=endpoint.max_tokens or settings.max_tokens,
        )
        if differences := fingerprint_differences(checked, now):
            raise ConfigError(f"这不是检查 {check_dir} 测过的评判模型，拒绝评分：" + "；".join(differences))
        announce(endpoint)

    return check


def _grade(job: GradeJob, overrides: dict[str, Any], config: Path | None) -> JobResult:
    log_to(job.out_dir)
    try:
        expected = len(job.only_ids) if job.only_ids is not None else count_jsonl_lines(job.inputs)
        if expected is not None and job.limit is not None:
            expected = min(expected, job.limit)
        settings = load_settings(config, overrides)
        settings.check_endpoint()
        on_endpoint = announce if job.checked_by is None else _vouched(job.checked_by, job, settings)
        with grading_progress() as progress:
            result = asyncio.run(run_job(job, settings, progress=progress, expected_transcripts=expected,
                                         on_endpoint=on_endpoint))
    except KeyboardInterrupt as exc:
        stopped(exc, job.out_dir / DB_NAME)
    except KefuError as exc:
        fail(exc)
    _print_summary(result, job)
    return result


def grade(
    inputs: options.Inputs,
    rubric: options.RubricOpt = REPO / "rubric/ecommerce_cs.yaml",
    out_dir: options.RunFolderOpt = Path("out"),
    model: options.ModelOpt = None,
    base_url: options.BaseUrlOpt = None,
    api_key_env: options.KeyEnvOpt = None,
    repeats: options.RepeatsOpt = 1,
    concurrency: options.ConcurrencyOpt = None,
    per_criterion: options.PerCriterionOpt = False,
    retry_failed: options.RetryFailedOpt = False,
    include_pending_batch: Annotated[bool, typer.Option(
        help="Also grade online the requests of a batch not yet collected (they are then paid twice).")] = False,
    rpm: options.RpmOpt = None,
    tpm: options.TpmOpt = None,
    temperature: options.TemperatureOpt = None,
    seed: options.SeedOpt = None,
    max_tokens: options.MaxTokensOpt = None,
    timeout: options.TimeoutOpt = None,
    response_format: options.ResponseFormatOpt = None,
    context_window: options.ContextWindowOpt = None,
    shop_speaker: options.ShopSpeakerOpt = None,
    bot_speaker: options.BotSpeakerOpt = None,
    shop_prefix: options.ShopPrefixOpt = None,
    ids: Annotated[Path | None, typer.Option(help="File of transcript ids to grade (one per line).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Grade at most this many transcripts.")] = None,
    config: options.ConfigOpt = None,
    redact: options.RedactFlag = None,
    compact: Annotated[bool | None, typer.Option(
        "--compact/--no-compact",
        help=f"Short replies for small models: per criterion the score first, alone at the maximum, else with "
             f"{COMPACT_MAX_EVIDENCE} quote of at most {COMPACT_QUOTE_CHARS} characters and reasoning of at most "
             f"{COMPACT_REASONING_CHARS}, enforced by the JSON schema. Default: on for the embedded offline model "
             "only. Switching it regrades.")
    ] = None,
    lexicons: options.LexiconsOpt = DEFAULT_LEXICONS,
    dry_run: Annotated[bool, typer.Option(
        help=f"Send nothing: forecast tokens and cost, and write OUT/{DRY_RUN_DIR}/rejects.jsonl and the prompts "
             f"of the first {PROMPT_SAMPLE} transcripts (OUT/{DRY_RUN_DIR}/prompts/*.txt) as the model would see them.")
    ] = False,
    all_prompts: Annotated[bool, typer.Option(help="With --dry-run: write the prompts of every transcript.")] = False,
    prices: Annotated[Path | None, typer.Option(help="Price table YAML for --dry-run (default: packaged).")] = None,
    checked_by: Annotated[Path | None, typer.Option(
        help="A check folder: refuse to grade (exit 2) unless this is the judge that check measured.")] = None,
) -> None:
    """Grade transcripts against a rubric; rerun the same command to resume."""
    job = GradeJob(inputs=inputs, rubric_path=rubric, out_dir=out_dir, repeats=repeats, per_criterion=per_criterion,
                   retry_failed=retry_failed, include_pending_batch=include_pending_batch,
                   shop_speakers=tuple(shop_speaker or ()),
                   bot_speakers=tuple(bot_speaker or ()), shop_prefixes=tuple(shop_prefix or ()),
                   only_ids=read_ids(ids),
                   limit=limit, redact=redact, compact=compact, lexicon_path=lexicons, checked_by=checked_by)
    overrides = {"model": model, "base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency,
                 "rpm": rpm, "tpm": tpm, "temperature": temperature, "seed": seed, "max_tokens": max_tokens,
                 "timeout": timeout, "response_format": response_format, "context_window": context_window}
    if dry_run:
        _forecast(job, overrides, config, prices, all_prompts=all_prompts)
        return
    _grade(job, overrides, config)


def _forecast(job: GradeJob, overrides: dict[str, Any], config: Path | None, prices: Path | None, *,
              all_prompts: bool) -> None:
    from pipeline.grading.costs import estimate_job, load_prices  # the price tables: only for --dry-run

    try:
        settings = load_settings(config, overrides)
        rubric = load_rubric(job.rubric_path)
        prompts = PromptSet(rubric.language)
        with DryRunFiles(job.out_dir, rubric=rubric, prompts=prompts, per_criterion=job.per_criterion,
                         compact=bool(job.compact), sample=None if all_prompts else PROMPT_SAMPLE) as files:
            estimate = estimate_job(
                files.record(select(read_job_inputs(job), job.only_ids, job.limit)), rubric=rubric, prompts=prompts,
                per_criterion=job.per_criterion, repeats=job.repeats, max_completion_tokens_estimate=None,
                model=settings.model, prices=load_prices(prices), batch=False,
            )
    except KefuError as exc:
        fail(exc)
    except OSError as exc:  # the inputs' own errors are KefuErrors: this is OUT/dry_run
        fail_run_folder(job.out_dir, exc)
    print_estimate(estimate, online=True)
    out.print(f"提示词 prompts: {files.prompts_dir} ({files.prompts_written} 个对话的提示词 prompts of "
              f"{files.prompts_written} transcripts)\nrejects: {files.rejects_jsonl} ({files.rejected})")
    for reject in files.first_rejects:
        where = f"{reject.file}:{reject.line}" if reject.line is not None else reject.file
        out.print(f"  ✗ {escape(where)}  {escape(reject.reason)}", soft_wrap=True)
    if files.rejected > len(files.first_rejects):
        out.print(f"  … 另有 {files.rejected - len(files.first_rejects)} 条 (and more), see {files.rejects_jsonl}")


def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("out/demo"),
) -> None:
    """Grade the three demo chats of eval_sets/ and report agreement with their labels.

    Uses whatever endpoint is configured, else the embedded offline model. Three chats show the
    pipeline working end to end; they are far too few to say anything about the model's quality.
    """
    from pipeline.consistency.job import CheckJob, check_graded  # the statistics: only for the commands that report
    from pipeline.report.render import write_report

    chats, rubric = REPO / "eval_sets/ecommerce_cs.jsonl", REPO / "rubric/ecommerce_cs.yaml"
    demo_ids = read_ids(REPO / "eval_sets/demo_ids.txt")
    result = _grade(GradeJob(inputs=[chats], rubric_path=rubric, out_dir=out_dir, only_ids=demo_ids), {}, None)
    check_job = CheckJob(inputs=[chats], rubric_path=rubric, labels_path=REPO / "eval_sets/ecommerce_cs_labels.csv",
                         out_dir=out_dir, repeats=1, only_ids=demo_ids)
    try:
        run = check_graded(check_job, model=result.model, grading=result)
    except KefuError as exc:
        fail(exc)
    files = write_report(run.result, out_dir, command="kefu demo")
    warn_small_sample(SampleSize(n=run.result.transcripts_graded, minimum=MIN_LABELLED))
    out.print(f"一致性报告 report: {files.report_html}\n一致性摘要 agreement: {files.agreement_md}")
