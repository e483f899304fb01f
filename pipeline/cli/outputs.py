"""The commands that read a finished run folder for people: `kefu export`, `kefu summary`, `kefu sample`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal, cast

import typer
from rich.markup import escape
from rich.table import Table

from pipeline.cli.console import console, fail, out, read_ids
from pipeline.errors import ConfigError, InputError, KefuError
from pipeline.outputs.exports import export_run, iter_score_rows, run_judge
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

if TYPE_CHECKING:
    from pipeline.agreement.ppi import MeanEstimate
    from pipeline.outputs.summary import GroupBy


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

    from pipeline.consistency.sampling import sample_strata
    from pipeline.inputs.labels import read_labels
    from pipeline.outputs.estimates import estimate_columns, estimate_means
    from pipeline.outputs.summary import GROUP_BY, transcript_groups

    sample = read_ids(sample_ids)
    stratified_by = sample_strata(sample_ids.read_text(encoding="utf-8")) if sample_ids is not None else None
    try:
        if stratified_by is not None and stratified_by not in GROUP_BY:
            raise InputError(str(sample_ids), f"抽样清单的分层 {stratified_by} 不是 {'|'.join(GROUP_BY)} 之一")
        with Store.open(out_dir) as store:
            rubric = _run_rubric(store, out_dir)
            groups = transcript_groups(store, rubric, by)
            strata = None
            if stratified_by is not None:
                strata = groups if stratified_by == by else transcript_groups(store, rubric, stratified_by)
            labels = read_labels(labels_path, rubric, known_transcripts=set(groups))
            result = estimate_means(iter_score_rows(store, rubric), rubric, labels, groups, by,
                                    sample=sample, strata=strata, stratified_by=stratified_by)
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
    if result.stratified_by is not None:
        out.print(f"抽样按 {result.stratified_by} 分层：PPI 与只用人工标注的均值按各层在本批对话中的占比加权"
                  "（分层估计，区间同样按层合成）")
    if result.warning:
        console.print(f"[yellow]注意：[/yellow]{result.warning}")
    out.print(str(path))


def _interval(e: MeanEstimate) -> str:
    if e.estimate != e.estimate:
        return "—"
    return f"{e.estimate:.2f}" if e.low != e.low else f"{e.estimate:.2f} [{e.low:.2f}, {e.high:.2f}]"


def sample_cmd(
    out_dir: Annotated[Path, typer.Argument(help="A run folder.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Chats to draw.")] = 100,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and run give the same sample.")] = 1,
    by: Annotated[str, typer.Option("--by", help="Stratify by agent, shop, platform or day.")] = "agent",
    dest: Annotated[Path, typer.Option("--to", help="Where to write the ids, one per line.")] = Path("sample_ids.txt"),
) -> None:
    """Draw a seeded random sample of a run's chats, stratified by group, for people to label (for PPI means)."""
    from pipeline.consistency.sampling import draw_sample, sample_text
    from pipeline.outputs.summary import GROUP_BY, transcript_groups

    if by not in GROUP_BY:
        fail(ConfigError(f"use --by {'|'.join(GROUP_BY)}"))
    try:
        with Store.open(out_dir) as store:
            groups = transcript_groups(store, _run_rubric(store, out_dir), by)
    except KefuError as exc:
        fail(exc)
    ids = draw_sample(groups, n, seed)
    dest.write_text(sample_text(ids, by, seed), encoding="utf-8")
    out.print(f"抽取了 {len(ids)} 条对话（共 {len(groups)} 条，按 {by} 分层，seed {seed}）：{dest}")


def _run_rubric(store: Store, out_dir: Path) -> Rubric:
    import json

    run = store.last_run()
    if run is None:
        raise InputError(str(out_dir), "no run has been recorded in this folder")
    return Rubric.model_validate(json.loads(run["settings"])["rubric"])
