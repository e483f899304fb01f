"""`kefu check` and `kefu report`: thin commands over `consistency` and `report`.

pipeline/cli/main.py registers them (`app.command("check")(check)`, `app.command("report")(report)`);
`python -m pipeline.cli.check check …` runs them on their own. Exit codes: 0 done, 1 a criterion is
below `--fail-under`, 2 bad input or settings, 130 interrupted (every finished grade is kept).

`--fail-under VERDICT` (`trusted` or `review`) is a floor on each labelled criterion's verdict, the
same verdict the report shows (`pipeline.consistency.verdict`): `--fail-under review` fails on any "not trusted",
`--fail-under trusted` on anything less than trusted. With two rubrics, both are held to it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from pipeline.cli import options
from pipeline.cli.console import (
    announce,
    console,
    fail,
    grading_progress,
    log_to,
    out,
    rate_limit_note,
    read_ids,
    stopped,
    warn_small_sample,
)
from pipeline.consistency.sample_size import MIN_LABELLED, SampleSize
from pipeline.errors import KefuError
from pipeline.grading.settings import load_settings

# The statistics and the report are imported by the commands that use them: `kefu grade` and
# `kefu --help` should not pay for them at start-up.
if TYPE_CHECKING:
    from pipeline.agreement.results import CI
    from pipeline.consistency.job import CheckRun
    from pipeline.consistency.results import CheckResult
    from pipeline.consistency.wordings import RubricComparison

from pipeline.paths import CHECKOUT_DIR as REPO


class ReportLang(StrEnum):
    """The language of the reports' words."""

    zh = "zh"
    en = "en"


LangOpt = Annotated[ReportLang, typer.Option("--lang", help="Language of the reports: zh (default) or en.")]


class FailUnder(StrEnum):
    """The verdict `--fail-under` requires of every labelled criterion."""

    trusted = "trusted"
    review = "review"


def _ci(ci: CI) -> str:
    if ci.estimate != ci.estimate:
        return "—"
    return f"{_num(ci.estimate)} [{_num(ci.low)}, {_num(ci.high)}]" if ci.low == ci.low else _num(ci.estimate)


def _num(value: float) -> str:
    from pipeline.report.messages import number

    return number(value)


def _print_result(result: CheckResult, folder: Path, sample: SampleSize) -> None:
    from pipeline.consistency.job import LABEL_REJECTS
    from pipeline.report.messages import message

    table = Table(title=f"kefu check — {result.rubric_name} ({result.rubric_id} v{result.rubric_version}), "
                        f"模型 {result.model}")
    for i, column in enumerate(("评分项", "结论", "n", "加权κ [95%置信区间]", "人工中位 κw", "基线 κw",
                                "自身一致", "替代检验")):
        table.add_column(column, justify="left" if i < 2 else "right")
    for c in result.criteria:
        detail = c.verdict_detail
        typical = _num(detail.typical_rater) if detail and detail.typical_rater is not None else "—"
        alt = "—" if c.alt_test is None else ("通过" if c.alt_test.passed else "未通过")
        exact = c.self_consistency.exact
        shown = message(f"verdict.{sample.verdict(c.verdict) or 'none'}")
        table.add_row(c.criterion_id, shown, str(c.judge_vs_human.n),
                      _ci(c.judge_vs_human.metrics.weighted_kappa), typical,
                      _num(detail.baseline) if detail else "—", "—" if exact != exact else f"{exact:.0%}", alt)
    out.print(table)
    for c in result.criteria:
        if c.verdict_detail is not None and sample.enough:  # too few chats: no verdict, so no sentence for one
            out.print(f"{c.criterion_id}（{c.verdict}）：{c.verdict_detail.sentence}")
    total = next(s for s in result.sums if s.kind == "total")
    kappa = _ci(total.judge_vs_human.metrics.weighted_kappa)
    icc = _num(total.icc.estimate) if (why := sample.icc_reason(total.icc.reason)) is None else f"— ({why})"
    out.print(f"总分：ICC(A,1) {icc}，加权κ {kappa}，{total.judge_vs_human.n} 个对话")
    if result.grading is not None:
        out.print(f"评分：本次 {result.grading.graded}，已有（跳过） {result.grading.skipped}，"
                  f"未评分 {result.grading.unscored}")
        if (limited := rate_limit_note(result.grading)) is not None:
            out.print(f"限流：{limited}")
    if result.label_rejects:
        out.print(f"[yellow]拒收 {result.label_rejects} 行标注[/yellow]：{folder / LABEL_REJECTS}")
    for note in result.notes:
        out.print(f"[yellow]注意 (note):[/yellow] {escape(note.text())}")
    if result.needs_review:
        ids = ", ".join(result.needs_review)
        out.print(f"[yellow]{escape(message('rpt.needs_review', n=len(result.needs_review), ids=ids))}[/yellow]")
    warn_small_sample(sample)


def _print_comparison(comparison: RubricComparison) -> None:
    table = Table(title=f"措辞 A {comparison.a.label} ({comparison.a.rubric_id} v{comparison.a.version}) → "
                        f"B {comparison.b.label} ({comparison.b.rubric_id} v{comparison.b.version})")
    metrics = [m.metric for m in comparison.criteria[0].metrics] if comparison.criteria else []
    for i, column in enumerate(("评分项", "n", "改变", *(f"Δ {m} [95%配对置信区间]" for m in metrics))):
        table.add_column(column, justify="left" if i == 0 else "right")
    for s in comparison.criteria:
        table.add_row(s.criterion_id, str(s.n), f"{len(s.flips)}/{s.n}", *(_ci(m.delta) for m in s.metrics))
    out.print(table)
    for s in comparison.criteria:
        out.print(f"{s.criterion_id}：{s.sentence}")
        if s.left_out:
            out.print(f"  未比较（缺评分）：{', '.join(s.left_out)}")


def check(
    inputs: options.Inputs,
    labels: Annotated[Path, typer.Option(
        help="Human labels: a CSV (long or wide layout), or a run folder whose labels were saved by `kefu review`.")],
    rubric: Annotated[list[Path] | None, typer.Option(
        "--rubric", "-r", help="Rubric YAML; give it twice to compare two wordings.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Check folder (store, reports).")] = Path("out/check"),
    repeats: Annotated[int, typer.Option(min=1, help="Independent grades per labelled transcript.")] = 2,
    fail_under: Annotated[FailUnder | None, typer.Option(
        help="Exit 1 if a labelled criterion's verdict is worse than this (trusted or review).")] = None,
    epsilon: Annotated[float, typer.Option(help="Alt-test margin ε (with 3+ raters).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples per interval.")] = 1000,
    trusted_kappa: Annotated[float, typer.Option(help="Verdict: trusted needs κw at least this…")] = 0.6,
    trusted_low: Annotated[float, typer.Option(help="…and its interval's lower end at least this.")] = 0.4,
    not_trusted_below: Annotated[float, typer.Option(help="Verdict: not trusted when κw is below this.")] = 0.4,
    alt_min_units: Annotated[int, typer.Option(min=2, help="Alt-test: transcripts an annotator needs.")] = 30,
    min_labelled: options.MinLabelledOpt = MIN_LABELLED,
    top: Annotated[int, typer.Option(min=0, help="Transcripts to list where judge and human differ most.")] = 10,
    compare: Annotated[Path | None, typer.Option(help="A previous agreement.json to report changes against.")] = None,
    ids: Annotated[Path | None, typer.Option(help="Check only these transcript ids (one per line).")] = None,
    model: options.ModelOpt = None,
    base_url: options.BaseUrlOpt = None,
    api_key_env: options.KeyEnvOpt = None,
    concurrency: options.ConcurrencyOpt = None,
    per_criterion: options.PerCriterionOpt = False,
    retry_failed: options.RetryFailedOpt = False,
    rpm: options.RpmOpt = None,
    tpm: options.TpmOpt = None,
    temperature: options.TemperatureOpt = None,
    sampling_seed: Annotated[int | None, typer.Option(
        help="Sampling seed sent to the model (--seed is the bootstrap's).")] = None,
    max_tokens: options.MaxTokensOpt = None,
    timeout: options.TimeoutOpt = None,
    response_format: options.ResponseFormatOpt = None,
    context_window: options.ContextWindowOpt = None,
    shop_speaker: options.ShopSpeakerOpt = None,
    bot_speaker: options.BotSpeakerOpt = None,
    shop_prefix: options.ShopPrefixOpt = None,
    config: options.ConfigOpt = None,
    redact: options.RedactFlag = None,
    lang: LangOpt = ReportLang.zh,
) -> None:
    """Grade labelled transcripts twice and measure the judge against itself and the humans."""
    from pipeline.agreement.verdict import VerdictThresholds
    from pipeline.consistency.job import CheckJob, read_chats, run_check
    from pipeline.consistency.results import CheckOptions, criteria_below
    from pipeline.consistency.wordings import run_comparison
    from pipeline.report.render import write_report, write_rubric_comparison
    from pipeline.report.result_file import load_result

    rubrics = rubric or [REPO / "rubric/ecommerce_cs.yaml"]
    if len(rubrics) > 2:
        console.print("[red]错误 (error)：[/red]--rubric 只能给一次，或给两次比较两种措辞 "
                      "(give --rubric once, or twice to compare two wordings)")
        raise typer.Exit(2)
    if len(rubrics) == 2 and rubrics[0].resolve() == rubrics[1].resolve():
        console.print(f"[red]错误 (error)：[/red]同一个评分标准文件给了两次（{rubrics[0]}）："
                      "比较措辞请给两个不同的文件")
        raise typer.Exit(2)
    if compare is not None and len(rubrics) == 2:
        console.print("[red]错误 (error)：[/red]--compare 只能配一个 --rubric；请对每个子文件夹运行 kefu report "
                      "(--compare needs a single --rubric; run `kefu report` per sub-folder)")
        raise typer.Exit(2)
    try:
        options = CheckOptions(
            n_resamples=resamples, seed=seed, epsilon=epsilon, alt_min_units=alt_min_units, top_differences=top,
            thresholds=VerdictThresholds(trusted_estimate=trusted_kappa, trusted_low=trusted_low,
                                            not_trusted_below=not_trusted_below),
        )
    except ValidationError as exc:
        console.print(f"[red]错误 (error)：[/red]{exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}")
        raise typer.Exit(2) from None
    overrides: dict[str, Any] = {
        "model": model, "base_url": base_url, "api_key_env": api_key_env, "concurrency": concurrency, "rpm": rpm,
        "tpm": tpm, "temperature": temperature, "seed": sampling_seed, "max_tokens": max_tokens, "timeout": timeout,
        "response_format": response_format, "context_window": context_window,
    }
    job = CheckJob(inputs=inputs, rubric_path=rubrics[0], labels_path=labels, out_dir=out_dir, repeats=repeats,
                   only_ids=read_ids(ids), per_criterion=per_criterion, retry_failed=retry_failed,
                   shop_speakers=tuple(shop_speaker or ()), bot_speakers=tuple(bot_speaker or ()),
                   shop_prefixes=tuple(shop_prefix or ()), redact=redact)
    log_to(out_dir)
    try:
        settings = load_settings(config, overrides)
        settings.check_endpoint()
        previous = load_result(compare) if compare is not None else None
        with grading_progress() as sink:
            if len(rubrics) == 1:
                runs: list[CheckRun] = [asyncio.run(run_check(job, settings, options=options, progress=sink,
                                                              on_endpoint=announce))]
                comparison = None
            else:
                pair = asyncio.run(run_comparison(job, rubrics[1], settings, options=options, progress=sink,
                                                  on_endpoint=announce))
                runs, comparison = list(pair.runs), pair.comparison
    except KeyboardInterrupt as exc:
        stopped(exc, out_dir)
    except KefuError as exc:
        fail(exc)
    for run in runs:
        run_job = replace(job, rubric_path=Path(run.result.rubric_path))
        files = write_report(run.result, run.out_dir, previous=previous, lang=lang.value,
                             chats=read_chats(run_job, {d.transcript_id for d in run.result.differences}),
                             min_labelled=min_labelled)
        _print_result(run.result, run.out_dir, SampleSize(n=run.result.transcripts_graded, minimum=min_labelled))
        out.print(f"报告 report: {files.report_html}\n摘要 summary: {files.agreement_md}\n"
                  f"数据 numbers: {files.agreement_json}")
    if comparison is not None:
        flipped = {f.transcript_id for s in comparison.criteria for f in s.flips}
        paths = write_rubric_comparison(comparison, out_dir, chats=read_chats(job, flipped), lang=lang.value)
        _print_comparison(comparison)
        out.print("措辞比较 comparison: " + ", ".join(str(p) for p in paths))
    if fail_under is not None:
        failing = [(Path(run.result.rubric_path).name, c) for run in runs
                   for c in criteria_below(run.result, fail_under.value)]
        for wording, c in failing:
            why = c.verdict_detail.sentence if c.verdict_detail else ""
            console.print(f"[red]低于 --fail-under {fail_under.value}:[/red] {wording} {c.criterion_id} "
                          f"{c.verdict}：{why}")
        if failing:
            raise typer.Exit(1)


def report(
    out_dir: Annotated[Path, typer.Argument(help="A check folder (holding agreement.json).")],
    compare: Annotated[Path | None, typer.Option(help="A previous agreement.json to report changes against.")] = None,
    history: Annotated[list[Path] | None, typer.Option(
        help="Earlier check folders (repeat the option): writes OUT/history.md and .html, each criterion over time.")]
    = None,
    lang: LangOpt = ReportLang.zh,
    min_labelled: options.MinLabelledOpt = MIN_LABELLED,
) -> None:
    """Rewrite a check's agreement.md and report.html, optionally with the changes since a previous check."""
    from pipeline.report.history import write_history
    from pipeline.report.render import write_report
    from pipeline.report.result_file import AGREEMENT_JSON, load_result

    try:
        result = load_result(out_dir / AGREEMENT_JSON)
        previous = load_result(compare) if compare is not None else None
    except KefuError as exc:
        fail(exc)
    files = write_report(result, out_dir, previous=previous, lang=lang.value, command="kefu report",
                         min_labelled=min_labelled)
    for path in files:
        if path is not None:
            out.print(str(path))
    if history:
        try:
            paths = write_history([*history, out_dir], out_dir, lang=lang.value)
        except KefuError as exc:
            fail(exc)
        out.print("\n".join(str(p) for p in paths))


app = typer.Typer(help="kefu check and report, on their own (pipeline/cli/main.py registers them in `kefu`).",
                  no_args_is_help=True)
app.command("check")(check)
app.command("report")(report)

if __name__ == "__main__":
    app()
