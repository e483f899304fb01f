"""The `kefu` command line: parses arguments, calls the library, prints results. Nothing imports it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from pipeline.checks.checker import DEFAULT_LEXICONS
from pipeline.checks.lexicons import is_lexicon_file, load_lexicons
from pipeline.cli.batch import batch_app, print_estimate
from pipeline.cli.check import check, report
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
    stop_on_sigterm,
    stopped,
    warn_small_sample,
)
from pipeline.cli.help import PlainHelpGroup
from pipeline.cli.options import (
    BaseUrlOpt,
    BotSpeakerOpt,
    ConcurrencyOpt,
    ConfigOpt,
    ContextWindowOpt,
    Inputs,
    KeyEnvOpt,
    LexiconsOpt,
    MaxTokensOpt,
    ModelOpt,
    PerCriterionOpt,
    RedactFlag,
    RepeatsOpt,
    ResponseFormatOpt,
    RetryFailedOpt,
    RpmOpt,
    RubricOpt,
    RunFolderOpt,
    ShopPrefixOpt,
    ShopSpeakerOpt,
    TemperatureOpt,
    TimeoutOpt,
    TpmOpt,
)
from pipeline.consistency.sample_size import MIN_LABELLED, SampleSize
from pipeline.errors import ConfigError, InputError, KefuError, RubricError
from pipeline.grading.dryrun import DRY_RUN_DIR, PROMPT_SAMPLE, DryRunFiles
from pipeline.grading.endpoints import NO_ENDPOINT, ResolvedEndpoint
from pipeline.grading.job import GradeJob, JobResult, read_job_inputs, run_job, select
from pipeline.grading.prompting import PromptSet
from pipeline.grading.redaction import LABELS, PiiKind
from pipeline.grading.schema import COMPACT_MAX_EVIDENCE, COMPACT_QUOTE_CHARS, COMPACT_REASONING_CHARS
from pipeline.grading.settings import Settings, load_settings
from pipeline.inputs.files import FORMAT_BY_SUFFIX, count_jsonl_lines
from pipeline.oserrors import os_problem
from pipeline.outputs.exports import export_run, iter_score_rows, run_judge
from pipeline.paths import CHECKOUT_DIR as REPO
from pipeline.rubric.load import load_rubric, rubric_json_schema
from pipeline.rubric.model import Rubric
from pipeline.store.store import DB_NAME, Store

if TYPE_CHECKING:
    from pipeline.agreement.ppi import MeanEstimate
    from pipeline.outputs.summary import GroupBy

app = typer.Typer(help="kefu-qa: LLM-graded quality inspection of customer-service chats.", no_args_is_help=True,
                  cls=PlainHelpGroup)
rubric_app = typer.Typer(help="Check and show rubric files.", no_args_is_help=True)
app.add_typer(rubric_app, name="rubric")
app.add_typer(batch_app, name="batch")
app.command("check")(check)
app.command("report")(report)



def _print_summary(result: JobResult, out_dir: Path) -> None:
    s = result.summary
    table = Table(title="kefu grade", show_header=False)
    table.add_row("model", result.model)
    table.add_row("transcripts read", str(s.transcripts))
    table.add_row("graded now", str(s.graded))
    table.add_row("unscored", str(s.unscored) + ("  (rerun with --retry-failed)" if s.unscored else ""))
    table.add_row("already done (resumed)", str(s.skipped))
    if s.pending_batch:
        table.add_row("在未收取的批次中 (pending in a batch)",
                      f"{s.pending_batch}  (已跳过，不重复付费；用 kefu batch collect 收取，"
                      "或加 --include-pending-batch 在线评分)")
    table.add_row("rejected", str(s.rejected) + (f"  (see {result.rejects_jsonl})" if s.rejected else ""))
    cached = f", {s.cached_tokens:,} from cache" if s.cached_tokens else ""
    table.add_row("tokens", f"{s.prompt_tokens:,} prompt{cached}, {s.completion_tokens:,} completion")
    table.add_row("elapsed", f"{s.elapsed_s:.1f} s")
    if (limited := rate_limit_note(s)) is not None:
        table.add_row("rate limited", limited)
    replaced = ", ".join(f"{LABELS[PiiKind(k)]} {n}" for k, n in s.redactions.items())
    table.add_row("PII redaction", ("on" if s.redacted else "off") + (f"  ({replaced})" if replaced else ""))
    if result.needs_review:
        table.add_row("needs review", f"{result.needs_review}  {NEEDS_REVIEW_NOTE}")
    for dim, mean in result.dimension_means.items():
        table.add_row(f"mean {dim}", "—" if mean is None else f"{mean:.2f}")
    out.print(table)
    out.print(f"scores: {result.scores_csv}\ngrades: {result.grades_jsonl}\nchecks: {result.checks_jsonl}\n"
              f"store:  {out_dir / DB_NAME}")
    if result.judge is not None:
        out.print(escape(result.judge.note))
    if not s.transcripts and not s.rejected:  # a wrong folder or extension: say so rather than report a clean run
        console.print(f"[yellow]nothing to grade:[/yellow] no conversation in the inputs (files read: "
                      f"{', '.join(FORMAT_BY_SUFFIX)}; folders are searched recursively)")


def _vouched(check_dir: Path, job: GradeJob, settings: Settings) -> Callable[[ResolvedEndpoint], None]:
    """An endpoint callback that refuses (ConfigError) a judge other than the one the check in `check_dir` measured."""
    from pipeline.grading.fingerprint import JudgeFingerprint, endpoint_name, fingerprint_differences
    from pipeline.report.result_file import AGREEMENT_JSON, load_result

    checked = load_result(check_dir / AGREEMENT_JSON).judge
    if checked is None:
        raise ConfigError(f"{check_dir} records no judge fingerprint: run `kefu check` again to vouch for a judge")
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
    _print_summary(result, job.out_dir)
    return result


@app.command()
def grade(
    inputs: Inputs,
    rubric: RubricOpt = REPO / "rubric/ecommerce_cs.yaml",
    out_dir: RunFolderOpt = Path("out"),
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    repeats: RepeatsOpt = 1,
    concurrency: ConcurrencyOpt = None,
    per_criterion: PerCriterionOpt = False,
    retry_failed: RetryFailedOpt = False,
    include_pending_batch: Annotated[bool, typer.Option(
        help="Also grade online the requests of a batch not yet collected (they are then paid twice).")] = False,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    temperature: TemperatureOpt = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    max_tokens: MaxTokensOpt = None,
    timeout: TimeoutOpt = None,
    response_format: ResponseFormatOpt = None,
    context_window: ContextWindowOpt = None,
    shop_speaker: ShopSpeakerOpt = None,
    bot_speaker: BotSpeakerOpt = None,
    shop_prefix: ShopPrefixOpt = None,
    ids: Annotated[Path | None, typer.Option(help="File of transcript ids to grade (one per line).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Grade at most this many transcripts.")] = None,
    config: ConfigOpt = None,
    redact: RedactFlag = None,
    compact: Annotated[bool | None, typer.Option(
        "--compact/--no-compact",
        help=f"Short replies for small models: per criterion {COMPACT_MAX_EVIDENCE} quote of at most "
             f"{COMPACT_QUOTE_CHARS} characters and reasoning of at most {COMPACT_REASONING_CHARS}, enforced by the "
             "JSON schema. Default: on for the embedded offline model only. Switching it regrades.")
    ] = None,
    lexicons: LexiconsOpt = DEFAULT_LEXICONS,
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
    out.print(f"prompts: {files.prompts_dir} ({files.prompts_written} 个对话的提示词 prompts of "
              f"{files.prompts_written} transcripts)\nrejects: {files.rejects_jsonl} ({files.rejected})")
    for reject in files.first_rejects:
        where = f"{reject.file}:{reject.line}" if reject.line is not None else reject.file
        out.print(f"  ✗ {escape(where)}  {escape(reject.reason)}", soft_wrap=True)
    if files.rejected > len(files.first_rejects):
        out.print(f"  … 另有 {files.rejected - len(files.first_rejects)} 条 (and more), see {files.rejects_jsonl}")


@app.command()
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
    out.print(f"report: {files.report_html}\nagreement: {files.agreement_md}")


@app.command("prepare-local")
def prepare_local() -> None:
    """Join the offline model's 22 parts into the cache once and verify size and sha256 (idempotent)."""
    from pipeline.llm.local import model as local_model

    try:
        if not local_model.local_extra_available():
            fail(ConfigError(NO_ENDPOINT))
        with console.status("joining and verifying the offline model (about 1.1 GB, once)"):
            path = local_model.prepare_model()
    except KefuError as exc:
        fail(exc)
    out.print(f"{path}\n  model: {local_model.model_identity(path)}")


@app.command("serve-local")
def serve_local(
    context: Annotated[int, typer.Option(help="Context size in tokens (llama-server -c).")] = 8192,
) -> None:
    """Start the embedded offline model's llama-server on 127.0.0.1 for other tools; Ctrl-C stops it."""
    from pipeline.llm.local import model as local_model

    try:
        if not local_model.local_extra_available():
            fail(ConfigError(NO_ENDPOINT))
        with console.status("preparing the offline model (joins 22 parts once, about 1.1 GB)"):
            model_path = local_model.prepare_model()
        with local_model.LocalServer(model_path, context_size=context) as server:
            out.print(f"serving {server.model}\n  OPENAI_BASE_URL={server.base_url}\n  model: {server.model}")
            console.print("[dim]Ctrl-C to stop[/dim]")
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
            fail(ConfigError(f"llama-server exited; see its log at {server.log_path}"))
    except KeyboardInterrupt:
        console.print("stopped.")
    except KefuError as exc:
        fail(exc)


@app.command("export")
def export_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="xlsx, parquet or csv.")] = "xlsx",
    dest: Annotated[Path | None, typer.Option("--to", help="Folder for the files (default: the run folder).")] = None,
) -> None:
    """Export a run's scores and per-criterion grades for people."""
    if fmt not in ("xlsx", "parquet", "csv"):
        fail(ConfigError(f"unknown format {fmt!r}: use xlsx, parquet or csv"))
    try:
        with Store.open(out_dir) as store:
            rubric = _run_rubric(store, out_dir)
            paths = export_run(store, rubric, fmt, dest or out_dir)  # type: ignore[arg-type]
    except KefuError as exc:
        fail(exc)
    for p in paths:
        out.print(str(p))


@app.command("summary")
def summary_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    by: Annotated[str, typer.Option("--by", help="agent, shop, platform or day.")] = "agent",
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv or xlsx.")] = "csv",
    dest: Annotated[Path | None, typer.Option("--to", help="File to write (default: OUT/summary_by_BY.FORMAT).")]
    = None,
    reply_rate: Annotated[str, typer.Option(
        "--reply-rate",
        help="3分钟平均回复率的口径: session(按会话,种子文档的定义,默认) 或 message(按消息汇总).",
    )] = "session",
    labels: Annotated[Path | None, typer.Option(
        help="Human labels CSV of some of the run's chats: adds judge-only, PPI-corrected and labelled-only means "
             "with 95% intervals (OUT/means_by_BY.csv).")] = None,
    sample_ids: Annotated[Path | None, typer.Option(
        help="The sample `kefu sample` drew (its --to file): shows the labelled chats are a random sample.")] = None,
) -> None:
    """Team summary of a run: final scores, weakest criteria, reply-time, 满意度 and banned-phrase rates per group."""
    from pipeline.checks.timing import REPLY_RATE_DEFINITIONS, ReplyRateBasis, TimingThresholds
    from pipeline.outputs.headings import summary_headings
    from pipeline.outputs.summary import GROUP_BY, rate_text, summarize_run, write_summary

    if by not in GROUP_BY or fmt not in ("csv", "xlsx") or reply_rate not in ReplyRateBasis.__members__:
        fail(ConfigError(f"use --by {'|'.join(GROUP_BY)}, --format csv|xlsx and --reply-rate session|message"))
    thresholds = TimingThresholds(reply_rate_basis=ReplyRateBasis(reply_rate))
    try:
        with Store.open(out_dir) as store:
            rubric = _run_rubric(store, out_dir)
            groups = summarize_run(store, rubric, by, thresholds)
            judge = run_judge(store)
        if not any(g.rows for g in groups):
            raise InputError(str(out_dir), "这次运行没有已完成的评分，无从汇总 (no finished grades to summarise)")
    except KefuError as exc:
        fail(exc)
    note = judge.note if judge else None
    path = write_summary(groups, rubric, by, dest or out_dir / f"summary_by_{by}.{fmt}",
                         cast(Literal["csv", "xlsx"], fmt), judge_note=note)
    names = summary_headings(rubric, by)
    keys = [by, "transcripts", "mean_total", *(f"mean_{d.id}" for d in rubric.dimensions), "weakest",
            "critical_failed", "needs_review", "first_reply_rate", "reply_rate", "satisfaction_rate", "banned_rate"]
    table = Table(title=f"团队汇总（按{names[by]}）")
    for key in keys:
        table.add_column(names[key], no_wrap=key == by)  # a narrow terminal squeezes the figures, never the name
    for g in groups:
        t = g.timing
        table.add_row(
            escape(g.group or "（未知）"), str(g.transcripts), _number(g.mean_total),
            *(_number(g.dimension_means[d.id]) for d in rubric.dimensions),
            escape("、".join(w.name for w in g.weakest)), str(g.critical_failed), str(g.needs_review),
            rate_text(t.first_replies_within, t.first_reply_sessions, t.first_reply_pass) if t else "—",
            rate_text(*t.reply_rate_counts, t.reply_pass) if t else "—",
            rate_text(t.satisfied_sessions, t.rated_sessions, t.satisfaction_pass) if t else "—",
            rate_text(g.banned_chats, g.phrase_checked, None),
        )
    out.print(table)
    out.print(f"口径: {REPLY_RATE_DEFINITIONS[thresholds.reply_rate_basis]} (--reply-rate {reply_rate}); "
              f"满意度 = {thresholds.satisfied_min_stars}星及以上的会话数 / 已评价会话数")
    if note is not None:
        out.print(escape(note))
    out.print(str(path))
    _print_vouching(out_dir)
    if labels is not None:
        _print_means(out_dir, labels, sample_ids, by)


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _print_vouching(out_dir: Path) -> None:
    """Which check, if any, vouches for the run's judge (`kefu grade --checked-by`)."""
    import json

    with Store.open(out_dir) as store:
        run = store.last_run()
    checked_by = json.loads(run["settings"]).get("checked_by") if run else None
    out.print(f"评判模型经检查 {checked_by} 验证（--checked-by）" if checked_by
              else "没有检查为本批评分的评判模型担保（可用 kefu grade --checked-by 检查目录）")


def _print_means(out_dir: Path, labels_path: Path, sample_ids: Path | None, by: GroupBy) -> None:
    """The three means per group from the labelled chats, written beside the summary."""
    import pandas as pd

    from pipeline.inputs.labels import read_labels
    from pipeline.outputs.estimates import estimate_columns, estimate_means
    from pipeline.outputs.summary import transcript_groups

    try:
        with Store.open(out_dir) as store:
            rubric = _run_rubric(store, out_dir)
            groups = transcript_groups(iter_score_rows(store, rubric), by)
            labels = read_labels(labels_path, rubric, known_transcripts=set(groups))
            result = estimate_means(iter_score_rows(store, rubric), rubric, labels, groups, by,
                                    sample=read_ids(sample_ids))
    except KefuError as exc:
        fail(exc)
    path = out_dir / f"means_by_{by}.csv"
    pd.DataFrame([estimate_columns(m, by) for m in result.means]).to_csv(path, index=False, encoding="utf-8-sig")
    table = Table(title=f"总分均值 by {by}：只用评判模型 / PPI 校正 / 只用人工标注（95% 区间）")
    for col in (by, "chats", "labelled", "judge only", "PPI", "labelled only"):
        table.add_column(col)
    for m in result.means:
        if m.item == "total":
            table.add_row("(全部)" if m.group == "*" else m.group or "(unknown)", str(m.chats), str(m.ppi.n_labelled),
                          *(_interval(e) for e in (m.judge_only, m.ppi, m.labelled_only)))
    out.print(table)
    if result.warning:
        console.print(f"[yellow]注意：[/yellow]{result.warning}")
    out.print(str(path))


def _interval(e: MeanEstimate) -> str:
    if e.estimate != e.estimate:
        return "—"
    return f"{e.estimate:.2f}" if e.low != e.low else f"{e.estimate:.2f} [{e.low:.2f}, {e.high:.2f}]"


@app.command("sample")
def sample_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Chats to draw.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and run give the same sample.")] = 1,
    by: Annotated[str, typer.Option("--by", help="Stratify by agent, shop, platform or day.")] = "agent",
    dest: Annotated[Path, typer.Option("--to", help="Where to write the ids, one per line.")] = Path("sample_ids.txt"),
) -> None:
    """Draw a seeded random sample of a run's chats, stratified by group, for people to label (for PPI means)."""
    from pipeline.consistency.sampling import draw_sample
    from pipeline.outputs.summary import GROUP_BY, transcript_groups

    if by not in GROUP_BY:
        fail(ConfigError(f"use --by {'|'.join(GROUP_BY)}"))
    try:
        with Store.open(out_dir) as store:
            groups = transcript_groups(iter_score_rows(store, _run_rubric(store, out_dir)), by)
    except KefuError as exc:
        fail(exc)
    ids = draw_sample(groups, n, seed)
    dest.write_text("".join(f"{t}\n" for t in ids), encoding="utf-8")
    out.print(f"抽取了 {len(ids)} 条对话（共 {len(groups)} 条，按 {by} 分层，seed {seed}）：{dest}")


@app.command("review")
def review_cmd(
    out_dirs: Annotated[list[Path], typer.Argument(help="Run folder(s) to review.")],
    host: Annotated[str, typer.Option(help="Address to bind; any but loopback requires the token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    token: Annotated[str | None, typer.Option(
        help="Access token when not bound to loopback (default: a new one, printed).")] = None,
) -> None:
    """Serve the review workbench over run folders: grades beside chats, labelling queues, disputes."""
    from pipeline.review import serve
    from pipeline.review.security import is_loopback, new_token

    needed = None if is_loopback(host) else (token or new_token())
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={needed}" if needed else "")
    out.print(f"复核工作台：{url}")
    if needed:
        out.print("非本机地址：每个请求都需要上面地址中的 token（或 Authorization: Bearer <token>）")
    console.print("[dim]Ctrl-C 停止[/dim]")
    try:
        serve(out_dirs, host=host, port=port, token=needed)
    except KefuError as exc:
        fail(exc)

def _run_rubric(store: Store, out_dir: Path) -> Rubric:
    import json

    run = store.last_run()
    if run is None:
        raise InputError(str(out_dir), "no run has been recorded in this folder")
    return Rubric.model_validate(json.loads(run["settings"])["rubric"])


@rubric_app.command("show")
def rubric_show(path: Annotated[Path, typer.Argument(help="Rubric YAML.")]) -> None:
    """Print the rubric as a tree with points."""
    try:
        r = load_rubric(path)
    except RubricError as exc:
        fail(exc)
        return
    tree = Tree(f"[bold]{r.name}[/bold] ({r.id} v{r.version}) — {r.total} 分")
    for d in r.dimensions:
        dn = tree.add(f"{d.name} [dim]{d.id}[/dim] — {d.points}")
        for g in d.groups:
            gn = dn.add(f"{g.name} [dim]{g.id}[/dim] — {g.points}")
            for c in g.criteria:
                cn = gn.add(f"{c.name} [dim]{c.id}[/dim] — {c.max}  (levels {'/'.join(map(str, c.points))})")
                for level in c.levels_ascending():
                    cn.add(f"{level.points}: {level.description}")
    out.print(tree)


@rubric_app.command("check")
def rubric_check(paths: Annotated[list[Path], typer.Argument(help="Rubric or lexicon YAML files.")]) -> None:
    """Validate rubric files, and lexicon files among them (rubric/*.yaml holds both); exit 1 if any has an error."""
    failed = False
    for path in paths:
        try:
            if is_lexicon_file(path):
                lex = load_lexicons(path)
                patterns = sum(len(g.entries) for g in lex.groups.values())
                out.print(f"✓ {path}: 词库 lexicons v{lex.version}, {len(lex.groups)} groups, {patterns} patterns")
                continue
            r = load_rubric(path)
        except RubricError as exc:
            failed = True
            console.print(f"[red]✗ {escape(str(path))}[/red]")
            for problem in exc.problems:
                console.print(f"  - {escape(problem)}")
            continue
        out.print(f"✓ {path}: {r.name}, {len(r.criteria())} criteria, {r.total} points")
    if failed:
        raise typer.Exit(1)


@rubric_app.command("schema")
def rubric_schema(
    dest: Annotated[Path, typer.Option("--out", help="Where to write it.")] = REPO / "rubric/rubric.schema.json",
) -> None:
    """Write the JSON schema of rubric files (for editors)."""
    import json

    dest.write_text(json.dumps(rubric_json_schema(), ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    out.print(str(dest))


def main() -> None:
    """Entry point for `kefu` and `python -m pipeline`."""
    stop_on_sigterm()
    try:
        app()
    except OSError as exc:  # a full disk, a permission, a path: the machine's state, not a bug, so no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[red]错误 (error)：[/red]{escape(where + os_problem(exc))}", soft_wrap=True)
        raise SystemExit(2) from None
