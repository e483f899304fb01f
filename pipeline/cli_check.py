"""`kefu check` and `kefu report`: thin commands over `consistency` and `report`.

pipeline/cli.py registers them (`app.command("check")(check)`, `app.command("report")(report)`);
`python -m pipeline.cli_check check …` runs them on their own. Exit codes: 0 done, 1 a criterion is
below `--fail-under`, 2 bad input or settings, 130 interrupted (every finished grade is kept).

`--fail-under X` is a floor on each labelled criterion's weighted-kappa *point estimate* (not the
verdict, whose thresholds are set separately): a criterion whose kappa is below X, or undefined
because there was nothing to agree on, fails the command. With two rubrics, both are held to it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from pipeline.cli_options import (
    BaseUrlOpt,
    BotSpeakerOpt,
    ConcurrencyOpt,
    ConfigOpt,
    ContextWindowOpt,
    Inputs,
    KeyEnvOpt,
    MaxTokensOpt,
    ModelOpt,
    PerCriterionOpt,
    RedactFlag,
    ResponseFormatOpt,
    RetryFailedOpt,
    RpmOpt,
    ShopPrefixOpt,
    ShopSpeakerOpt,
    TemperatureOpt,
    TimeoutOpt,
    TpmOpt,
)
from pipeline.console import announce, console, fail, grading_progress, log_to, out, rate_limit_note, read_ids
from pipeline.errors import KefuError
from pipeline.settings import load_settings

# The statistics and the report are imported by the commands that use them: `kefu grade` and
# `kefu --help` should not pay for them at start-up.
if TYPE_CHECKING:
    from pipeline import agreement as ag
    from pipeline.consistency import CheckResult, CheckRun, RubricComparison

REPO = Path(__file__).resolve().parent.parent


def _ci(ci: ag.CI) -> str:
    if ci.estimate != ci.estimate:
        return "—"
    return f"{ci.estimate:.2f} [{ci.low:.2f}, {ci.high:.2f}]" if ci.low == ci.low else f"{ci.estimate:.2f}"


def _num(value: float) -> str:
    return "—" if value != value else f"{value:.2f}"


def _print_result(result: CheckResult, folder: Path) -> None:
    from pipeline.consistency import LABEL_REJECTS

    table = Table(title=f"kefu check — {result.rubric_name} ({result.rubric_id} v{result.rubric_version}), "
                        f"model {result.model}")
    for column in ("criterion", "verdict", "n", "weighted κ [95% CI]", "humans κw", "self exact", "alt-test"):
        table.add_column(column, justify="left" if column in ("criterion", "verdict") else "right")
    for c in result.criteria:
        ceiling = _num(c.human_ceiling.vs_consensus.mean.weighted_kappa) if c.human_ceiling else "—"
        alt = "—" if c.alt_test is None else ("passed" if c.alt_test.passed else "not passed")
        exact = c.self_consistency.exact
        table.add_row(c.criterion_id, c.verdict or "not labelled", str(c.judge_vs_human.n),
                      _ci(c.judge_vs_human.metrics.weighted_kappa), ceiling,
                      "—" if exact != exact else f"{exact:.0%}", alt)
    out.print(table)
    total = next(s for s in result.sums if s.kind == "total")
    kappa = _ci(total.judge_vs_human.metrics.weighted_kappa)
    out.print(f"total: ICC(A,1) {_num(total.icc.estimate)}, weighted κ {kappa} on {total.judge_vs_human.n} transcripts")
    if result.grading is not None:
        out.print(f"grades: {result.grading.graded} new, {result.grading.skipped} already stored, "
                  f"{result.grading.unscored} unscored")
        if (limited := rate_limit_note(result.grading)) is not None:
            out.print(f"rate limited: {limited}")
    if result.label_rejects:
        out.print(f"[yellow]{result.label_rejects} label line(s) rejected[/yellow]: {folder / LABEL_REJECTS}")
    for note in result.notes:
        out.print(f"[yellow]note:[/yellow] {note}")


def _print_comparison(comparison: RubricComparison) -> None:
    table = Table(title=f"rubric A {comparison.a.rubric_id} v{comparison.a.version} → "
                        f"B {comparison.b.rubric_id} v{comparison.b.version}")
    for column in ("criterion", "n", "κw A", "κw B", "Δ [95% paired CI]", "flipped"):
        table.add_column(column, justify="left" if column == "criterion" else "right")
    for s in comparison.criteria:
        table.add_row(s.criterion_id, str(s.n), _num(s.weighted_kappa_a), _num(s.weighted_kappa_b), _ci(s.delta),
                      str(len(s.flips)))
    out.print(table)


def check(
    inputs: Inputs,
    labels: Annotated[Path, typer.Option(
        help="Human labels: a CSV (long or wide layout), or a run folder whose labels were saved by `kefu review`.")],
    rubric: Annotated[list[Path] | None, typer.Option(
        "--rubric", "-r", help="Rubric YAML; give it twice to compare two wordings.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Check folder (store, reports).")] = Path("out/check"),
    repeats: Annotated[int, typer.Option(min=1, help="Independent grades per labelled transcript.")] = 2,
    fail_under: Annotated[float | None, typer.Option(
        help="Exit 1 if a labelled criterion's weighted-kappa estimate is below this (or undefined).")] = None,
    epsilon: Annotated[float, typer.Option(help="Alt-test margin ε (with 3+ raters).")] = 0.2,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    resamples: Annotated[int, typer.Option(min=10, help="Bootstrap resamples per interval.")] = 1000,
    trusted_kappa: Annotated[float, typer.Option(help="Verdict: trusted needs κw at least this…")] = 0.6,
    trusted_low: Annotated[float, typer.Option(help="…and its interval's lower end at least this.")] = 0.4,
    not_trusted_below: Annotated[float, typer.Option(help="Verdict: not trusted when κw is below this.")] = 0.4,
    alt_min_units: Annotated[int, typer.Option(min=2, help="Alt-test: transcripts an annotator needs.")] = 30,
    top: Annotated[int, typer.Option(min=0, help="Transcripts to list where judge and human differ most.")] = 10,
    compare: Annotated[Path | None, typer.Option(help="A previous agreement.json to report changes against.")] = None,
    ids: Annotated[Path | None, typer.Option(help="Check only these transcript ids (one per line).")] = None,
    model: ModelOpt = None,
    base_url: BaseUrlOpt = None,
    api_key_env: KeyEnvOpt = None,
    concurrency: ConcurrencyOpt = None,
    per_criterion: PerCriterionOpt = False,
    retry_failed: RetryFailedOpt = False,
    rpm: RpmOpt = None,
    tpm: TpmOpt = None,
    temperature: TemperatureOpt = None,
    sampling_seed: Annotated[int | None, typer.Option(
        help="Sampling seed sent to the model (--seed is the bootstrap's).")] = None,
    max_tokens: MaxTokensOpt = None,
    timeout: TimeoutOpt = None,
    response_format: ResponseFormatOpt = None,
    context_window: ContextWindowOpt = None,
    shop_speaker: ShopSpeakerOpt = None,
    bot_speaker: BotSpeakerOpt = None,
    shop_prefix: ShopPrefixOpt = None,
    config: ConfigOpt = None,
    redact: RedactFlag = None,
) -> None:
    """Grade labelled transcripts twice and measure the judge against itself and the humans."""
    from pipeline import agreement as ag
    from pipeline.consistency import CheckJob, CheckOptions, criteria_below, run_check, run_comparison
    from pipeline.report import load_result, write_report, write_rubric_comparison

    rubrics = rubric or [REPO / "rubric/ecommerce_cs.yaml"]
    if len(rubrics) > 2:
        console.print("[red]error:[/red] give --rubric once, or twice to compare two wordings")
        raise typer.Exit(2)
    if compare is not None and len(rubrics) == 2:
        console.print("[red]error:[/red] --compare needs a single --rubric; run `kefu report` per sub-folder")
        raise typer.Exit(2)
    try:
        options = CheckOptions(
            n_resamples=resamples, seed=seed, epsilon=epsilon, alt_min_units=alt_min_units, top_differences=top,
            thresholds=ag.VerdictThresholds(trusted_estimate=trusted_kappa, trusted_low=trusted_low,
                                            not_trusted_below=not_trusted_below),
        )
    except ValidationError as exc:
        console.print(f"[red]error:[/red] {exc.errors()[0]['loc'][-1]}: {exc.errors()[0]['msg']}")
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
    except KeyboardInterrupt:
        console.print(f"[yellow]stopped.[/yellow] Every finished grade is saved under {out_dir}; "
                      "run the same command again to resume.")
        raise typer.Exit(130) from None
    except KefuError as exc:
        fail(exc)
    for run in runs:
        files = write_report(run.result, run.out_dir, previous=previous)
        _print_result(run.result, run.out_dir)
        out.print(f"report: {files.report_html}\nsummary: {files.agreement_md}\nnumbers: {files.agreement_json}")
    if comparison is not None:
        paths = write_rubric_comparison(comparison, out_dir)
        _print_comparison(comparison)
        out.print("comparison: " + ", ".join(str(p) for p in paths))
    if fail_under is not None:
        failing = [(run.result.rubric_id, cid, kappa) for run in runs for cid, kappa in
                   criteria_below(run.result, fail_under)]
        for rubric_id, cid, kappa in failing:
            console.print(f"[red]below --fail-under {fail_under}:[/red] {rubric_id}.{cid} weighted κ {_num(kappa)}")
        if failing:
            raise typer.Exit(1)


def report(
    out_dir: Annotated[Path, typer.Argument(help="A check folder (holding agreement.json).")],
    compare: Annotated[Path | None, typer.Option(help="A previous agreement.json to report changes against.")] = None,
) -> None:
    """Rewrite a check's agreement.md and report.html, optionally with the changes since a previous check."""
    from pipeline.report import AGREEMENT_JSON, load_result, write_report

    try:
        result = load_result(out_dir / AGREEMENT_JSON)
        previous = load_result(compare) if compare is not None else None
    except KefuError as exc:
        fail(exc)
    files = write_report(result, out_dir, previous=previous)
    for path in files:
        if path is not None:
            out.print(str(path))


app = typer.Typer(help="kefu check and report, on their own (pipeline/cli.py registers them in `kefu`).",
                  no_args_is_help=True)
app.command("check")(check)
app.command("report")(report)

if __name__ == "__main__":
    app()
