"""The check's statistics: per criterion and per sum, judge against humans and itself, from scores in memory.

`assess` turns the stored grades and the labels into a `CheckResult`. The choices it makes, which
`agreement.json` repeats in words:

- **Which judge score.** Repeat 0. Repeats exist to measure the judge's self-consistency; comparing
  their mean or mode with the humans would grade a judge nobody runs in production, where one grade
  stands alone. Repeat 0 is an independent sample like any other.
- **Which human score.** With one rater, that rater's score. With several, the consensus
  (`agreement.CONSENSUS_RULE`): the median of their levels, rounded down between two levels
  (`agreement.consensus_levels`), for the level-based metrics, so that it is a level and kappa applies;
  their mean for the point-based ones. The human ceiling beside it compares each rater with the
  consensus of the *others* by the same definitions (and every pair of raters), which is the comparison
  the judge's number is read against.
- **Sums.** A group's, dimension's or the total's score is the sum of its criteria, empty when any is
  missing; for humans the sum of the per-criterion consensus levels. Their "levels" are the sums the
  rubric can produce, trimmed to the observed range (unobserved end levels change no metric but cost
  memory in the bootstrap).
- **Intervals.** Percentile bootstrap over transcripts (`agreement.compare_scores`), except the ICC
  of sums, whose 95% interval is pingouin's analytic F-based one (a bootstrap would call pingouin a
  thousand times per sum).
- **Verdict.** Per criterion, anchored on the humans and the uninformative baselines
  (`pipeline.consistency.verdict`, with a sentence saying why); a criterion nobody labelled gets none.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, NamedTuple

import numpy as np

from pipeline.agreement.alpha import krippendorff_alpha
from pipeline.agreement.alt_test import alt_test
from pipeline.agreement.baselines import baseline_agreements
from pipeline.agreement.compare import compare_scores
from pipeline.agreement.icc import icc_totals
from pipeline.agreement.raters import consensus_levels, pairwise_human_agreement, rater_vs_consensus
from pipeline.agreement.reasons import reason
from pipeline.consistency.results import (
    DEFAULT_OPTIONS,
    CheckOptions,
    CheckResult,
    CriterionCheck,
    CriterionGap,
    Difference,
    FloatArray,
    HumanCeiling,
    JudgeScores,
    SelfConsistency,
    SumCheck,
    UnitScores,
)
from pipeline.consistency.verdict import VerdictPolicy, judge_verdict
from pipeline.grading.runner import RunSummary
from pipeline.inputs.labels import LabelSet, RatingMatrix
from pipeline.report.messages import Message, note
from pipeline.rubric.model import Criterion, Rubric


class Assessment(NamedTuple):
    """What `assess` computes: the result, and the per-transcript scores behind it."""

    result: CheckResult
    scores: UnitScores


def assess(
    rubric: Rubric,
    labels: LabelSet,
    judge: JudgeScores,
    *,
    options: CheckOptions = DEFAULT_OPTIONS,
    repeats: int,
    model: str,
    rubric_path: str,
    grading: RunSummary | None = None,
    needs_review: Collection[str] = (),
) -> Assessment:
    """Every statistic of the check from the labels and the stored judge scores; no I/O.

    Labelled transcripts in `needs_review` (a field of the chat addresses the grader) are left out of
    every statistic, as `kefu summary` leaves them out of its means: their grades are not trusted.
    """
    held = sorted(set(needs_review) & set(labels.transcripts()))
    if held:
        labels = LabelSet(labels=[x for x in labels.labels if x.transcript_id not in needs_review],
                          rejects=labels.rejects)
    units = labels.transcripts()
    row = {u: i for i, u in enumerate(units)}
    scores = UnitScores(units=units, judge={}, human={}, levels={})
    criteria: list[CriterionCheck] = []
    notes: list[Message] = []
    for c in rubric.criteria():
        matrix = labels.matrix(c.id)
        human_matrix = np.full((len(units), len(matrix.raters)), np.nan)
        human_matrix[[row[u] for u in matrix.units]] = matrix.scores
        human = consensus_levels(human_matrix, c.points) if matrix.raters else np.full(len(units), np.nan)
        repeat_matrix = np.array(
            [[_score(judge, u, r, c.id) for r in range(repeats)] for u in units], dtype=np.float64
        ).reshape(len(units), repeats)
        scores.judge[c.id], scores.human[c.id], scores.levels[c.id] = repeat_matrix[:, 0], human, c.points
        human_mean = _raters_mean(human_matrix) if len(matrix.raters) >= 2 else None
        scores.human_mean[c.id] = human if human_mean is None else human_mean
        criteria.append(_criterion_check(c, matrix, human_matrix, human, human_mean, repeat_matrix, units, row,
                                         options))
        if not matrix.units:
            notes.append(note("note.unlabelled", criterion=c.id, name=c.name))
    graded = [u for u in units if any(v is not None for v in judge.get(u, {}).get(0, {}).values())]
    if len(graded) < len(units):
        missing = sorted(set(units) - set(graded))
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        notes.append(note("note.ungraded", n=len(missing), ids=shown))
    result = CheckResult(
        created_at=datetime.now(UTC), rubric_id=rubric.id, rubric_version=rubric.version, rubric_name=rubric.name,
        rubric_hash=rubric.content_hash, rubric_path=rubric_path, model=model, repeats=repeats, options=options,
        labels=len(labels.labels), label_rejects=len(labels.rejects), raters=labels.raters(),
        transcripts_labelled=len(units), transcripts_graded=len(graded), grading=grading, criteria=criteria,
        sums=_sum_checks(rubric, scores, options), differences=_differences(rubric, scores, options.top_differences),
        notes=notes, needs_review=held,
    )
    return Assessment(result, scores)


def _raters_mean(human_matrix: FloatArray) -> FloatArray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # units nobody labelled stay NaN
        return np.asarray(np.nanmean(human_matrix, axis=1), dtype=np.float64)


def _score(judge: JudgeScores, unit: str, repeat: int, criterion_id: str) -> float:
    """One stored score, NaN when there is none."""
    value = judge.get(unit, {}).get(repeat, {}).get(criterion_id)
    return math.nan if value is None else float(value)


def _criterion_check(
    c: Criterion, matrix: RatingMatrix, human_matrix: FloatArray, human: FloatArray, human_mean: FloatArray | None,
    repeat_matrix: FloatArray, units: list[str], row: dict[str, int], options: CheckOptions,
) -> CriterionCheck:
    """`matrix` holds the labels (its own units × raters); the arrays follow `units`, `human` is their consensus
    level and `human_mean` their mean (None with one rater)."""
    label_units, raters, label_scores = matrix
    judge = repeat_matrix[:, 0]
    pair = compare_scores(judge, human, c.points, human_numeric=human_mean, n_resamples=options.n_resamples,
                             seed=options.seed, confidence=options.confidence)
    ceiling = None
    if len(raters) >= 2:
        ceiling = HumanCeiling(
            pairwise=pairwise_human_agreement(label_scores, c.points, rater_ids=raters),
            vs_consensus=rater_vs_consensus(label_scores, c.points, rater_ids=raters),
        )
    alt = None
    if len(raters) >= 3:
        alt = alt_test(judge[[row[u] for u in label_units]], label_scores, rater_ids=raters,
                          epsilon=options.epsilon, q=options.alt_q, min_units=options.alt_min_units)
    consistency = _self_consistency(repeat_matrix, c.points, units)
    baselines = baseline_agreements(
        human_matrix, c.points, human, human_numeric=human_mean, n_resamples=options.n_resamples, seed=options.seed,
        confidence=options.confidence,
    ) if label_units else []
    detail = judge_verdict(
        pair, max_points=c.max, baselines=baselines, ceiling=ceiling.vs_consensus if ceiling else None,
        self_kappa=consistency.weighted_kappa, alt_passed=alt.passed if alt and len(alt.annotators) >= 3 else None,
        policy=VerdictPolicy(thresholds=options.thresholds, bias_share=options.bias_share),
    ) if label_units else None
    return CriterionCheck(
        criterion_id=c.id, name=c.name, max_points=c.max, n_labelled=len(label_units), raters=raters,
        judge_vs_human=pair, self_consistency=consistency, human_ceiling=ceiling, alt_test=alt,
        baselines=baselines, verdict=detail.verdict if detail else None, verdict_detail=detail,
    )


def _self_consistency(repeat_matrix: FloatArray, levels: list[int], units: list[str]) -> SelfConsistency:
    repeats = repeat_matrix.shape[1]
    scored = np.sum(~np.isnan(repeat_matrix), axis=1) >= 2
    if repeats < 2 or not np.any(scored):
        return SelfConsistency(repeats=repeats, n=0, exact=math.nan, weighted_kappa=math.nan,
                               alpha_ordinal=math.nan, differ_share=math.nan, differ_ids=[],
                               reason=reason("one_repeat" if repeats < 2 else "no_repeats"))
    pairwise = pairwise_human_agreement(repeat_matrix, levels)
    both = repeat_matrix[scored]
    differ = np.nanmax(both, axis=1) != np.nanmin(both, axis=1)
    ids = [u for u, s in zip(units, scored, strict=True) if s]
    return SelfConsistency(
        repeats=repeats, n=int(scored.sum()), exact=pairwise.mean.exact,
        weighted_kappa=pairwise.mean.weighted_kappa,
        alpha_ordinal=krippendorff_alpha(repeat_matrix, levels, "ordinal"),
        differ_share=float(differ.mean()), differ_ids=sorted(u for u, d in zip(ids, differ, strict=True) if d),
    )


def achievable_sums(criteria: Sequence[Criterion]) -> list[int]:
    """Every total the criteria's levels can add up to, ascending."""
    sums = {0}
    for c in criteria:
        sums = {s + p for s in sums for p in c.points}
    return sorted(sums)


def _sum_levels(criteria: Sequence[Criterion], *observed: FloatArray) -> list[int]:
    """Achievable sums trimmed to the observed range (at least two levels)."""
    levels = achievable_sums(criteria)
    values = np.concatenate(observed)
    values = values[~np.isnan(values)]
    if not values.size:
        return levels
    lo, hi = levels.index(int(values.min())), levels.index(int(values.max()))
    if lo == hi:
        lo, hi = (lo, hi + 1) if hi + 1 < len(levels) else (lo - 1, hi)
    return levels[lo:hi + 1]


def _sum_of(scores: Mapping[str, FloatArray], criteria: Sequence[Criterion], n: int) -> FloatArray:
    """Per unit, the sum of the criteria's scores; NaN where any is missing (NaN propagates)."""
    return np.sum([scores[c.id] for c in criteria], axis=0) if criteria else np.zeros(n)


def _sum_checks(rubric: Rubric, scores: UnitScores, options: CheckOptions) -> list[SumCheck]:
    parts: list[tuple[str, Literal["group", "dimension", "total"], str, list[Criterion]]] = []
    for d in rubric.dimensions:
        parts += [(g.id, "group", g.name, list(g.criteria)) for g in d.groups]
    parts += [(d.id, "dimension", d.name, [c for g in d.groups for c in g.criteria]) for d in rubric.dimensions]
    parts.append(("total", "total", rubric.name, rubric.criteria()))
    out = []
    for sum_id, kind, name, criteria in parts:
        judge = _sum_of(scores.judge, criteria, len(scores.units))
        human = _sum_of(scores.human, criteria, len(scores.units))
        pair = compare_scores(judge, human, _sum_levels(criteria, judge, human),
                                 n_resamples=options.n_resamples, seed=options.seed, confidence=options.confidence)
        out.append(SumCheck(sum_id=sum_id, kind=kind, name=name, max_points=sum(c.max for c in criteria),
                            judge_vs_human=pair, icc=icc_totals(judge, human)))
    return out


def _differences(rubric: Rubric, scores: UnitScores, top: int) -> list[Difference]:
    criteria = rubric.criteria()
    judge = np.column_stack([scores.judge[c.id] for c in criteria])
    human = np.column_stack([scores.human[c.id] for c in criteria])
    gaps = np.abs(judge - human)
    found = []
    for i, unit in enumerate(scores.units):
        differing = [CriterionGap(criterion_id=c.id, judge=int(judge[i, k]), human=float(human[i, k]))
                     for k, c in enumerate(criteria) if gaps[i, k] > 0]
        if differing:
            found.append(Difference(
                transcript_id=unit, gap=float(np.nansum(gaps[i])), criteria=differing,
                judge_total=None if np.isnan(judge[i]).any() else float(judge[i].sum()),
                human_total=None if np.isnan(human[i]).any() else float(human[i].sum()),
            ))
    found.sort(key=lambda d: (-d.gap, d.transcript_id))
    return found[:top]
