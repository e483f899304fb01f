"""DCH-1 agreement study: the human ceiling from the 19 annotators, and the judge against them.

Converts the DCH-1 training set (NTCIR-14 STC-3 DQ; shared/datasets/dch1_stc3) AT RUN TIME into the
pipeline's input formats, in a work folder outside the repository (a temp dir by default):

- transcripts.jsonl — one conversation per line, `customer` → customer, `helpdesk` → agent, a turn's
  utterances joined by newlines (empty ones, uncrawled emoji and images, are dropped);
- labels.csv — long layout, one row per annotator × dialogue × score: rater_id `a00`…`a18` is the
  annotator's position in `annotations` (a stable annotator id, see the dataset README), criterion
  accomplishment/satisfaction/efficiency for A/S/E, score = original + 2 as rubric/dch1_quality.yaml says.

Then it prints the human ceiling, computed from the data alone through `labels.read_labels` and
`agreement` (no model needed): each annotator against the mean of the other 18 (Spearman, as the
project's issue quotes it: about 0.48 / 0.53 / 0.44 for A / S / E) and Krippendorff's alpha over all 19,
on the full training set and on the dev ids. Unless --ceiling-only, it then runs the consistency check
(`kefu check`'s library call) on the dev ids, or a seeded --sample of them, with whatever endpoint is
configured (flags, OPENAI_BASE_URL/OPENAI_API_KEY, kefu.toml), with --local the embedded offline model
(started and stopped by the grading job, as for `kefu demo`: greedy, seed 0), or with --mock against
the loopback mock server, whose scores are arbitrary: a mock run shows the plumbing works and nothing
about agreement. Per score it prints the verdict (pipeline/consistency/verdict.py) with its sentence,
self-consistency and the alt-test, then the judge, the two uninformative judges and one annotator
against the others on the same dialogues: Spearman against the annotator mean, weighted kappa, exact
agreement, MAE and bias, each with its interval (the annotators' as median and range).

Never copy the converted files or a report into the repository: the dialogues are research-only
Weibo text with unmasked phone numbers (see the dataset README). Reports go to out/ (git-ignored).

    /tmp/venv/bin/python bench/dch1_agreement.py --ceiling-only
    /tmp/venv/bin/python bench/dch1_agreement.py --sample 40 --mock
    nice -n 5 /tmp/venv/bin/python bench/dch1_agreement.py --sample 100 --local
    /tmp/venv/bin/python bench/dch1_agreement.py --model deepseek-chat --base-url https://api.deepseek.com/v1
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import math
import random
import resource
import sys
import tempfile
import time
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.agreement.alpha import krippendorff_alpha  # noqa: E402
from pipeline.agreement.baselines import constant_judge, prior_judge  # noqa: E402
from pipeline.agreement.raters import rater_vs_consensus  # noqa: E402
from pipeline.agreement.results import CI, PairAgreement  # noqa: E402
from pipeline.consistency.assess import assess  # noqa: E402
from pipeline.consistency.job import CheckJob, CheckRun, run_check  # noqa: E402
from pipeline.consistency.results import CheckOptions, CheckResult  # noqa: E402
from pipeline.grading.settings import DEFAULT_CONFIG, load_settings  # noqa: E402
from pipeline.inputs.labels import Label, LabelSet, read_labels  # noqa: E402
from pipeline.paths import DCH1_DIR  # noqa: E402
from pipeline.report.render import write_report  # noqa: E402
from pipeline.rubric.load import load_rubric  # noqa: E402
from pipeline.rubric.model import Rubric  # noqa: E402
from pipeline.testing.mockserver import MockServer  # noqa: E402

DATASET = DCH1_DIR

RUBRIC = ROOT / "rubric" / "dch1_quality.yaml"
CRITERIA = {"A": "accomplishment", "S": "satisfaction", "E": "efficiency"}
ROLES = {"customer": "customer", "helpdesk": "agent"}


# --- conversion --------------------------------------------------------------------------------


def load_dialogues(dataset: Path) -> list[dict[str, Any]]:
    """The Chinese training set as published."""
    data: list[dict[str, Any]] = json.loads((dataset / "train_data_cn.json").read_text(encoding="utf-8"))
    return data


def transcript_line(dialogue: dict[str, Any]) -> dict[str, Any]:
    """One dialogue in the JSONL input format."""
    turns = [{"role": ROLES[t["sender"]], "text": "\n".join(u for u in t["utterances"] if u.strip())}
             for t in dialogue["turns"]]
    return {"id": str(dialogue["id"]), "platform": "weibo", "turns": turns}


def label_rows(dialogue: dict[str, Any]) -> Iterator[tuple[str, str, int, str]]:
    """(transcript_id, criterion_id, score, rater_id) for every annotator and score of one dialogue."""
    for position, annotation in enumerate(dialogue["annotations"]):
        for key, criterion in CRITERIA.items():
            yield str(dialogue["id"]), criterion, annotation["quality"][key] + 2, f"a{position:02d}"


def seeded_order(ids: Collection[str], seed: int) -> list[str]:
    """The ids in a seeded random order: --sample N takes the first N, so a smaller sample is part of a larger one."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return order


def graded_first(dialogues: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """The dialogues with `order`'s first, in that order, then the rest as published.

    The grading job sends them in file order, so a run stopped early has graded the first dialogues of the
    seeded order, and `--sample K` with K the dialogues it finished checks them without a new request.
    """
    rank = {u: i for i, u in enumerate(order)}
    return sorted(dialogues, key=lambda d: rank.get(str(d["id"]), len(rank)))


def convert(dialogues: list[dict[str, Any]], work: Path) -> tuple[Path, Path]:
    """Write transcripts.jsonl and labels.csv into `work`."""
    work.mkdir(parents=True, exist_ok=True)
    transcripts, labels = work / "transcripts.jsonl", work / "labels.csv"
    with transcripts.open("w", encoding="utf-8") as fh:
        for d in dialogues:
            fh.write(json.dumps(transcript_line(d), ensure_ascii=False) + "\n")
    with labels.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["transcript_id", "criterion_id", "score", "rater_id"])
        for d in dialogues:
            writer.writerows(label_rows(d))
    return transcripts, labels


# --- the human ceiling -------------------------------------------------------------------------


def ceiling_row(labels: LabelSet, rubric: Rubric, criterion: str, ids: Collection[str]) -> dict[str, float]:
    """Human agreement on one criterion over the dialogues in `ids`."""
    units, raters, scores = labels.matrix(criterion)
    keep = np.array([u in ids for u in units])
    m = scores[keep]
    levels = rubric.criterion(criterion).points
    vs_rest = rater_vs_consensus(m, levels, rater_ids=raters).mean
    return {
        "n": float(m.shape[0]),
        "spearman": vs_rest.spearman,  # each annotator vs the mean of the other 18, averaged over annotators
        "kendall": vs_rest.kendall,
        "weighted_kappa": vs_rest.weighted_kappa,  # vs the median level of the others
        "alpha_interval": krippendorff_alpha(m, levels, "interval"),
        "alpha_ordinal": krippendorff_alpha(m, levels, "ordinal"),
    }


def print_ceiling(labels: LabelSet, rubric: Rubric, splits: dict[str, set[str]]) -> None:
    print("\nDCH-1 human ceiling (19 annotators; one annotator vs the rest, averaged over annotators)")
    print(f"{'split':<10}{'n':>6}  {'score':<16}{'Spearman':>9}{'Kendall':>9}{'κw':>7}{'α interval':>12}"
          f"{'α ordinal':>11}")
    for split, ids in splits.items():
        for key, criterion in CRITERIA.items():
            r = ceiling_row(labels, rubric, criterion, ids)
            print(f"{split:<10}{int(r['n']):>6}  {key} {criterion:<14}{r['spearman']:>9.3f}{r['kendall']:>9.3f}"
                  f"{r['weighted_kappa']:>7.3f}{r['alpha_interval']:>12.3f}{r['alpha_ordinal']:>11.3f}")


# --- every rater, and the uninformative judges, as if each were the judge ---------------------


def as_judge(labels: LabelSet, rubric: Rubric, ids: Collection[str], options: CheckOptions
             ) -> dict[str, dict[str, tuple[str | None, float, bool | None]]]:
    """Judge name → criterion → (verdict, κw, alt-test passed) on the dialogues in `ids`.

    Each rater in turn is taken out of the labels and served as the judge against the other 18, exactly as
    `kefu check` treats a model; the constant and prior-sampling judges are checked against all 19.
    """
    kept = [x for x in labels.labels if x.transcript_id in ids]
    raters = sorted({x.rater_id for x in kept})
    judges: dict[str, tuple[list[Label], dict[str, dict[int, dict[str, int | None]]]]] = {}
    for rater in raters:
        scores: dict[str, dict[int, dict[str, int | None]]] = {}
        for x in kept:
            if x.rater_id == rater:
                scores.setdefault(x.transcript_id, {}).setdefault(0, {})[x.criterion_id] = x.score
        judges[rater] = ([x for x in kept if x.rater_id != rater], scores)
    full = LabelSet(labels=kept)
    for name in ("constant", "prior"):
        scores = {}
        for criterion in CRITERIA.values():
            units, _, m = full.matrix(criterion)
            levels = rubric.criterion(criterion).points
            made = constant_judge(m, levels) if name == "constant" else prior_judge(m, seed=1)
            for u, v in zip(units, made, strict=True):
                scores.setdefault(u, {}).setdefault(0, {})[criterion] = int(v)
        judges[name] = (kept, scores)
    out: dict[str, dict[str, tuple[str | None, float, bool | None]]] = {}
    for name, (others, scores) in judges.items():
        result, _ = assess(rubric, LabelSet(labels=others), scores, options=options, repeats=1, model=name,
                           rubric_path=str(RUBRIC))
        out[name] = {c.criterion_id: (c.verdict, c.judge_vs_human.metrics.weighted_kappa.estimate,
                                      c.alt_test.passed if c.alt_test else None) for c in result.criteria}
    return out


def print_as_judge(table: dict[str, dict[str, tuple[str | None, float, bool | None]]], split: str) -> None:
    print(f"\nEvery rater as if it were the judge ({split}; vs the other 18), and the uninformative judges (vs all 19)")
    print(f"{'judge':<10}" + "".join(f"{key + ' ' + c:<32}" for key, c in CRITERIA.items()))
    for name, row in table.items():
        cells = []
        for criterion in CRITERIA.values():
            verdict, kappa, passed = row[criterion]
            alt = "—" if passed is None else ("alt ✓" if passed else "alt ✗")
            cells.append(f"{verdict or '—':<12} κw {kappa:5.2f} {alt:<8}")
        print(f"{name:<10}" + "".join(f"{c:<32}" for c in cells))
    raters = [row for name, row in table.items() if name not in ("constant", "prior")]
    counts = []
    for criterion in CRITERIA.values():
        verdicts = [row[criterion][0] for row in raters]
        counts.append(" / ".join(str(verdicts.count(v)) for v in ("trusted", "review", "not trusted")))
    print(f"{'raters':<10}" + "".join(f"{c:<32}" for c in counts) + "(trusted / review / not trusted)")


# --- the judge ---------------------------------------------------------------------------------


class Row(NamedTuple):
    """One line of the judge-beside-its-yardsticks table: a judge, or the raters summarised."""

    criterion: str
    who: str
    spearman: str
    weighted_kappa: str
    exact: str
    mae: str
    bias: str


def _number(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.2f}"


def _ci(x: CI) -> str:
    return "—" if math.isnan(x.estimate) else f"{x.estimate:.2f} [{x.low:.2f}, {x.high:.2f}]"


def _spread(values: list[float]) -> str:
    """Median (lowest–highest) over the raters."""
    kept = [v for v in values if not math.isnan(v)]
    return f"{float(np.median(kept)):.2f} ({min(kept):.2f}–{max(kept):.2f})" if kept else "—"


def _pair_row(criterion: str, who: str, pair: PairAgreement) -> Row:
    m = pair.metrics
    return Row(criterion, who, _ci(m.spearman), _ci(m.weighted_kappa), _ci(m.exact), _ci(m.mae), _ci(m.bias))


def judge_rows(result: CheckResult) -> list[Row]:
    """Per criterion: the judge, the uninformative judges and one rater against the others, on the same dialogues.

    The raters' line is each annotator against the other annotators' consensus (`human_ceiling.vs_consensus`,
    the same definitions as the judge against all of them): median (lowest–highest) over the annotators, with
    their signed bias, rater minus the others.
    """
    rows = []
    for c in result.criteria:
        rows.append(_pair_row(c.criterion_id, "judge", c.judge_vs_human))
        rows += [_pair_row(c.criterion_id, b.name, b.agreement) for b in c.baselines]
        if c.human_ceiling is not None:
            people = [x.metrics for x in c.human_ceiling.vs_consensus.comparisons]
            rows.append(Row(c.criterion_id, "one rater", *(_spread([getattr(m, name) for m in people])
                                                           for name in ("spearman", "weighted_kappa", "exact",
                                                                        "mae", "bias"))))
    return rows


def print_judge(run: CheckRun, mock: bool) -> None:
    """The verdict per score with its figures, then the judge beside the baselines and the raters."""
    warning = "  [MOCK SERVER: arbitrary scores, the agreement below means nothing]" if mock else ""
    result = run.result
    print(f"\nJudge {result.model} on {result.transcripts_graded} dialogues, {result.repeats} grades each{warning}")
    print(f"{'score':<16}{'verdict':<13}{'self κw':>8}{'self exact':>11}  {'alt-test (ω, won/tested, ρ)':<32}")
    for c in result.criteria:
        s, alt = c.self_consistency, c.alt_test
        alt_text = "—" if alt is None else (
            f"{'passed' if alt.passed else 'failed'} ({alt.winning_rate:.2f}, "
            f"{sum(a.won for a in alt.annotators)}/{len(alt.annotators)}, {alt.discrimination:.2f})")
        print(f"{c.criterion_id:<16}{c.verdict or '—':<13}{_number(s.weighted_kappa):>8}{_number(s.exact):>11}  "
              f"{alt_text:<32}")
        if c.verdict_detail is not None:
            print(f"{'':<16}{c.verdict_detail.sentence}")
        if s.n:
            print(f"{'':<16}repeats differ on {len(s.differ_ids)} of {s.n} dialogues")
    print(f"\nOn the same {result.transcripts_graded} dialogues, each with its 95% bootstrap interval "
          f"({result.options.n_resamples} resamples); 'one rater' is each annotator against the others, "
          f"median (lowest–highest) over the {len(result.raters)} annotators")
    print(f"{'score':<16}{'who':<11}" + "".join(f"{h:<22}" for h in ("ρ vs mean", "κw", "exact", "MAE", "bias")))
    for r in judge_rows(result):
        print(f"{r.criterion:<16}{r.who:<11}" + "".join(f"{v:<22}" for v in r[2:]))
    if run.grading is not None and run.grading.summary.graded:  # a resumed run that sent nothing has no timing
        g = run.grading.summary
        cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
        per = g.elapsed_s * result.repeats / g.graded  # dialogues graded in this run, not resumed ones
        print(f"\ngrading: {g.graded} grades in {g.elapsed_s:.0f} s ({per:.1f} s a dialogue), "
              f"{g.prompt_tokens} prompt and {g.completion_tokens} completion tokens, "
              f"{g.unscored} unscored; child processes' CPU {cpu.ru_utime + cpu.ru_stime:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", type=Path, default=DATASET, help="the dch1_stc3 folder")
    parser.add_argument("--work", type=Path, help="folder for the converted files (default: a new temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "dch1_check", help="check folder (git-ignored)")
    parser.add_argument("--ceiling-only", action="store_true", help="only the human ceiling; no model")
    parser.add_argument("--raters", action="store_true",
                        help="also every rater's verdict as if it were the judge, and the uninformative judges")
    parser.add_argument("--sample", type=int, help="check the first N dev dialogues in a seeded random order")
    parser.add_argument("--sample-seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--resamples", type=int, default=1000)
    judge = parser.add_mutually_exclusive_group()
    judge.add_argument("--mock", action="store_true", help="grade with the loopback mock server (meaningless)")
    judge.add_argument("--local", action="store_true",
                       help="grade with the embedded offline model, started and stopped here as `kefu demo` does "
                            "(greedy, seed 0); any configured endpoint or key is ignored")
    parser.add_argument("--model")
    parser.add_argument("--base-url")
    parser.add_argument("--concurrency", type=int)
    args = parser.parse_args()

    started = time.monotonic()
    dev = set((args.dataset / "dev_ids.txt").read_text(encoding="utf-8").split())
    shuffled = seeded_order(dev, args.sample_seed)
    ids = shuffled[:args.sample] if args.sample else shuffled
    dialogues = graded_first(load_dialogues(args.dataset), shuffled)
    with ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dch1-")))
        transcripts, labels_csv = convert(dialogues, work)
        rubric = load_rubric(RUBRIC)
        labels = read_labels(labels_csv, rubric)
        print(f"converted {len(dialogues)} dialogues and {len(labels.labels)} scores "
              f"({len(labels.rejects)} rejected) into {work} in {time.monotonic() - started:.1f} s")
        print_ceiling(labels, rubric, {"train-all": {str(d["id"]) for d in dialogues}, "dev": dev})
        if args.raters:
            print_as_judge(as_judge(labels, rubric, dev, CheckOptions(n_resamples=args.resamples)), "dev")
        if args.ceiling_only:
            return
        if args.sample:
            print(f"\nsample: the first {len(ids)} of the {len(dev)} dev ids shuffled with seed {args.sample_seed}")
        overrides = {"model": args.model, "base_url": args.base_url, "concurrency": args.concurrency}
        if args.mock:
            server = stack.enter_context(MockServer(choice="random"))
            overrides |= {"base_url": server.base_url, "model": args.model or "mock-model"}
        if args.local and (args.model or args.base_url):
            parser.error("--local grades with the embedded model: leave out --model and --base-url")
        settings = load_settings(None, overrides, environ={} if args.mock or args.local else None)
        if args.local and settings.endpoint_configured:
            parser.error(f"--local: {DEFAULT_CONFIG} names an endpoint; run from a folder without it")
        job = CheckJob(inputs=[transcripts], rubric_path=RUBRIC, labels_path=labels_csv, out_dir=args.out,
                       repeats=args.repeats, only_ids=set(ids))
        run = asyncio.run(run_check(job, settings, options=CheckOptions(n_resamples=args.resamples)))
        files = write_report(run.result, args.out)
        print_judge(run, args.mock)
        print(f"\nreport: {files.report_html}  ({time.monotonic() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
