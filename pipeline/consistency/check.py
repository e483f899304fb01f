"""The consistency check: double-grading and judge-versus-human agreement over a labelled set.

`run_check` reads the human labels, has every labelled transcript graded `repeats` times (through
the resumable grading job, so a rerun sends no request), and `assess` turns the stored grades and the
labels into a `CheckResult`. The choices it makes, which `agreement.json` repeats in words:

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
- **Rubric comparison.** Two wordings are graded separately; per criterion the change in weighted kappa
  has a *paired* bootstrap interval: each resample draws the same transcripts for both wordings.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from pipeline.agreement.alpha import krippendorff_alpha
from pipeline.agreement.alt_test import AltTestResult, alt_test
from pipeline.agreement.baselines import BaselineAgreement, baseline_agreements
from pipeline.agreement.compare import compare_scores, paired_deltas
from pipeline.agreement.icc import icc_totals
from pipeline.agreement.raters import consensus_levels, pairwise_human_agreement, rater_vs_consensus
from pipeline.agreement.results import CI, CONSENSUS_RULE, HumanAgreement, IccResult, PairAgreement, PairedDelta
from pipeline.agreement.verdict import DEFAULT_THRESHOLDS, Verdict, VerdictThresholds
from pipeline.consistency.verdict import CriterionVerdict, VerdictPolicy, judge_verdict
from pipeline.errors import ConfigError, InputError
from pipeline.grading.endpoints import ResolvedEndpoint
from pipeline.grading.fingerprint import JudgeFingerprint, run_fingerprint
from pipeline.grading.job import GradeJob, JobResult, read_job_inputs, run_job
from pipeline.grading.runner import ProgressSink, RunSummary
from pipeline.grading.settings import Settings
from pipeline.inputs.labels import LabelSet, RatingMatrix, read_label_source
from pipeline.models.transcript import Transcript
from pipeline.outputs.exports import iter_score_rows
from pipeline.report.messages import message, number
from pipeline.rubric.model import Criterion, Rubric, load_rubric
from pipeline.store.store import DB_NAME, Store

FloatArray = npt.NDArray[np.float64]
JudgeScores = Mapping[str, Mapping[int, Mapping[str, int | None]]]
"""Stored judge scores: transcript id → repeat → criterion id → points (None when unscored)."""

JUDGE_SCORE_RULE = "repeat 0 of the judge's grades (the other repeats measure self-consistency only)"
HUMAN_SCORE_RULE = f"the single rater's score; with several raters their consensus: {CONSENSUS_RULE}"
LABEL_REJECTS = "label_rejects.jsonl"
SCHEMA_VERSION: Literal[1] = 1


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckOptions(_Model):
    """How the statistics are computed; recorded in agreement.json."""

    n_resamples: int = Field(default=1000, ge=10, description="Bootstrap resamples per interval.")
    seed: int = Field(default=0, description="Seed of the bootstrap's transcript resampling.")
    confidence: float = Field(default=0.95, gt=0, lt=1, description="Coverage of every interval.")
    epsilon: float = Field(default=0.2, ge=0, lt=1, description="The alt-test's margin ε granted to the judge.")
    alt_q: float = Field(default=0.05, gt=0, lt=1, description="FDR level of the alt-test's correction.")
    alt_min_units: int = Field(
        default=30, ge=2, description="Transcripts an annotator needs in common with the judge to be tested."
    )
    thresholds: VerdictThresholds = Field(
        default=DEFAULT_THRESHOLDS, description="Absolute weighted-kappa thresholds (used with one rater)."
    )
    bias_share: float = Field(
        default=0.1, ge=0, description="Verdict: a mean bias beyond this share of the maximum keeps a criterion "
        "from trusted."
    )
    top_differences: int = Field(
        default=10, ge=0, description="How many transcripts to list where judge and human differ most."
    )


DEFAULT_OPTIONS = CheckOptions()


class SelfConsistency(_Model):
    """How well the judge agrees with itself across independent repeats of the same grade."""

    repeats: int = Field(description="Repeats requested per transcript.")
    n: int = Field(description="Transcripts with at least two scored repeats of this criterion.")
    exact: float = Field(description="Share of transcripts where two repeats agree, mean over repeat pairs.")
    weighted_kappa: float = Field(description="Quadratic-weighted kappa between repeats, mean over repeat pairs.")
    alpha_ordinal: float = Field(description="Krippendorff's ordinal alpha over all repeats.")
    differ_share: float = Field(description="Share of the n transcripts whose repeats do not all agree.")
    differ_ids: list[str] = Field(description="Those transcripts, sorted.")
    reason: str | None = Field(default=None, description="Why there is nothing to measure, when there is not.")


class HumanCeiling(_Model):
    """Agreement among the human raters: the best a judge can be expected to reach."""

    pairwise: HumanAgreement = Field(description="Every pair of raters on the transcripts both scored.")
    vs_consensus: HumanAgreement = Field(description="Each rater against the consensus of the others.")


class CriterionCheck(_Model):
    """Everything the check found for one criterion."""

    criterion_id: str = Field(description="Rubric criterion id.")
    name: str = Field(description="Display name.")
    max_points: int = Field(description="The criterion's maximum.")
    n_labelled: int = Field(description="Transcripts at least one rater scored on this criterion.")
    raters: list[str] = Field(description="Raters who scored this criterion.")
    judge_vs_human: PairAgreement = Field(description="Judge repeat 0 versus the human score, with intervals.")
    self_consistency: SelfConsistency = Field(description="The judge against itself.")
    human_ceiling: HumanCeiling | None = Field(description="Agreement among raters; None with fewer than two.")
    alt_test: AltTestResult | None = Field(description="The alt-test; None with fewer than three raters.")
    baselines: list[BaselineAgreement] = Field(
        description="Uninformative judges on the same labels; empty when nobody labelled it."
    )
    verdict: Verdict | None = Field(description="Trusted, review or not trusted; None when nobody labelled it.")
    verdict_detail: CriterionVerdict | None = Field(
        description="Why: the figures the verdict rests on and its sentence; None when nobody labelled it."
    )


class SumCheck(_Model):
    """Judge versus human on a group's, a dimension's or the rubric's total."""

    sum_id: str = Field(description="Group or dimension id, or 'total'.")
    kind: Literal["group", "dimension", "total"] = Field(description="What is summed.")
    name: str = Field(description="Display name.")
    max_points: int = Field(description="The sum's maximum.")
    judge_vs_human: PairAgreement = Field(description="Every metric over the achievable sums as levels.")
    icc: IccResult = Field(description="ICC(A,1) of judge and human sums.")


class CriterionGap(_Model):
    """One criterion where judge and human gave different points."""

    criterion_id: str = Field(description="Rubric criterion id.")
    judge: int = Field(description="The judge's points (repeat 0).")
    human: float = Field(description="The human points (consensus with several raters).")


class Difference(_Model):
    """A transcript where judge and human disagree, for the report's "differ most" list."""

    transcript_id: str = Field(description="The transcript.")
    gap: float = Field(description="Σ |judge − human| in points over the criteria both scored.")
    judge_total: float | None = Field(description="The judge's total, when every criterion is scored.")
    human_total: float | None = Field(description="The human total, when every criterion is labelled.")
    criteria: list[CriterionGap] = Field(description="The criteria that differ, in rubric order.")


class CheckResult(_Model):
    """The outcome of one check: what agreement.json holds."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Bumped when this layout changes.")
    created_at: datetime = Field(description="When the check was computed (UTC).")
    rubric_id: str = Field(description="Rubric id.")
    rubric_version: str = Field(description="Rubric version.")
    rubric_name: str = Field(description="Rubric display name.")
    rubric_hash: str = Field(description="Rubric content hash, as in the store's grades.")
    rubric_path: str = Field(description="The rubric file checked.")
    model: str = Field(description="The judge model.")
    repeats: int = Field(description="Independent grades requested per labelled transcript.")
    options: CheckOptions = Field(description="How the statistics were computed.")
    judge_score_rule: str = Field(default=JUDGE_SCORE_RULE, description="Which judge score is compared.")
    human_score_rule: str = Field(default=HUMAN_SCORE_RULE, description="Which human score is compared.")
    labels: int = Field(description="Human scores read.")
    label_rejects: int = Field(description="Label lines or cells rejected (see label_rejects.jsonl).")
    raters: list[str] = Field(description="Every rater id in the labels.")
    transcripts_labelled: int = Field(description="Transcripts with at least one human score.")
    transcripts_graded: int = Field(description="Of those, transcripts with a scored repeat-0 grade.")
    grading: RunSummary | None = Field(default=None, description="What the grading step did in this run.")
    judge: JudgeFingerprint | None = Field(
        default=None, description="The judge these figures hold for: model, endpoint, rubric, prompts, sampling."
    )
    criteria: list[CriterionCheck] = Field(description="Per criterion, in rubric order.")
    sums: list[SumCheck] = Field(description="Per group, per dimension, and the total.")
    differences: list[Difference] = Field(description="Transcripts where judge and human differ most, largest first.")
    notes: list[str] = Field(description="Things a reader should know about this check.")


@dataclass(frozen=True)
class UnitScores:
    """Per-transcript scores behind a CheckResult, for analyses that pair two checks."""

    units: list[str]
    """Labelled transcript ids, sorted; every array below follows this order."""
    judge: dict[str, FloatArray]
    """Criterion id → repeat-0 points, NaN where unscored."""
    human: dict[str, FloatArray]
    """Criterion id → human points (consensus level), NaN where nobody labelled."""
    levels: dict[str, list[int]]
    """Criterion id → its level points."""
    human_mean: dict[str, FloatArray] = field(default_factory=dict)
    """Criterion id → the raters' mean (the point-based metrics' reference); the human points with one rater."""


class Assessment(NamedTuple):
    """What `assess` computes: the result, and the per-transcript scores behind it."""

    result: CheckResult
    scores: UnitScores


@dataclass(frozen=True)
class CheckRun:
    """A check's result with the run folder and grading job that produced it."""

    result: CheckResult
    scores: UnitScores
    out_dir: Path
    grading: JobResult | None = None
    """None when the check read grades made elsewhere (`check_graded` without one)."""


@dataclass(frozen=True)
class CheckJob:
    """What to check and where the results go; the grading knobs mirror GradeJob."""

    inputs: Sequence[Path]
    rubric_path: Path
    labels_path: Path
    out_dir: Path
    repeats: int = 2
    only_ids: Collection[str] | None = None
    """Check only these transcripts (of the labelled ones); None checks every labelled transcript."""
    per_criterion: bool = False
    retry_failed: bool = False
    shop_speakers: Collection[str] = ()
    bot_speakers: Collection[str] = ()
    shop_prefixes: Sequence[str] = ()
    prompts_dir: Path | None = None
    redact: bool | None = None
    """Replace personal data before sending; None decides by the endpoint, as for `kefu grade`."""

    def grade_job(self, labelled: Collection[str]) -> GradeJob:
        """The grading job that gives every labelled transcript its repeats."""
        return GradeJob(
            inputs=self.inputs, rubric_path=self.rubric_path, out_dir=self.out_dir, repeats=self.repeats,
            per_criterion=self.per_criterion, retry_failed=self.retry_failed,
            shop_speakers=self.shop_speakers, bot_speakers=self.bot_speakers,
            shop_prefixes=self.shop_prefixes, only_ids=set(labelled), prompts_dir=self.prompts_dir,
            redact=self.redact,
        )


# --- the run ----------------------------------------------------------------------------------


def read_check_labels(job: CheckJob, rubric: Rubric) -> LabelSet:
    """The job's labels of transcripts in its inputs (and `only_ids`); rejects go to OUT/label_rejects.jsonl."""
    known = {item.id for item in read_job_inputs(job.grade_job(())) if isinstance(item, Transcript)}
    labels = read_label_source(job.labels_path, rubric, known_transcripts=known)
    if job.only_ids is not None:  # left out on purpose, so not rejects
        labels = LabelSet(labels=[x for x in labels.labels if x.transcript_id in job.only_ids],
                          rejects=labels.rejects)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    with (job.out_dir / LABEL_REJECTS).open("w", encoding="utf-8") as fh:
        for reject in labels.rejects:
            fh.write(reject.model_dump_json() + "\n")
    if not labels.labels:
        raise InputError(
            str(job.labels_path),
            f"no usable label: {len(labels.rejects)} line(s) rejected, see {job.out_dir / LABEL_REJECTS}",
        )
    return labels


async def run_check(
    job: CheckJob,
    settings: Settings,
    *,
    options: CheckOptions = DEFAULT_OPTIONS,
    progress: ProgressSink | None = None,
    on_endpoint: Callable[[ResolvedEndpoint], None] | None = None,
) -> CheckRun:
    """Grade every labelled transcript `job.repeats` times (resumable) and compare with the labels."""
    rubric = load_rubric(job.rubric_path)
    labels = read_check_labels(job, rubric)
    labelled = labels.transcripts()
    if settings.endpoint_configured:  # before paying for grades that could not be used
        _require_one_model(job.out_dir, rubric, settings.model)
    graded = await run_job(job.grade_job(labelled), settings, progress=progress,
                           expected_transcripts=len(labelled), on_endpoint=on_endpoint)
    return check_graded(job, model=graded.model, options=options, grading=graded, labels=labels)


def check_graded(job: CheckJob, *, model: str, options: CheckOptions = DEFAULT_OPTIONS,
                 grading: JobResult | None = None, labels: LabelSet | None = None) -> CheckRun:
    """The check of grades already in `job.out_dir` (by `model`), without grading or starting an endpoint.

    For callers that have just graded the labelled transcripts themselves, e.g. `kefu demo`. `labels`
    saves reading the label file again when the caller already has `read_check_labels(job, …)`.
    """
    rubric = load_rubric(job.rubric_path)
    labels = labels if labels is not None else read_check_labels(job, rubric)
    _require_one_model(job.out_dir, rubric, model)
    judge = stored_scores(job.out_dir, rubric, set(labels.transcripts()))
    result, scores = assess(rubric, labels, judge, options=options, repeats=job.repeats, model=model,
                            rubric_path=str(job.rubric_path), grading=grading.summary if grading else None)
    result = result.model_copy(update={"judge": stored_fingerprint(job.out_dir)})
    return CheckRun(result=result, scores=scores, out_dir=job.out_dir, grading=grading)


def stored_fingerprint(out_dir: Path) -> JudgeFingerprint | None:
    """The fingerprint of the run folder's last grading run; None when nothing was graded there."""
    if not (out_dir / DB_NAME).exists():
        return None
    with Store.open(out_dir) as store:
        run = store.last_run()
    return None if run is None else run_fingerprint(run, json.loads(run["settings"]))


def read_chats(job: CheckJob, wanted: Collection[str]) -> dict[str, Transcript]:
    """These transcripts, read again from the job's inputs (for reports that show the chat)."""
    if not wanted:
        return {}
    return {t.id: t for t in read_job_inputs(job.grade_job(wanted)) if isinstance(t, Transcript) and t.id in wanted}


def stored_scores(out_dir: Path, rubric: Rubric, transcript_ids: Collection[str]) -> JudgeScores:
    """The run folder's grades of `rubric` for these transcripts, by transcript and repeat."""
    scores: dict[str, dict[int, dict[str, int | None]]] = {}
    with Store.open(out_dir) as store:
        for row in iter_score_rows(store, rubric):
            if row.transcript_id in transcript_ids:
                scores.setdefault(row.transcript_id, {})[row.repeat] = dict(row.scores)
    return scores


def _require_one_model(out_dir: Path, rubric: Rubric, model: str) -> None:
    """Grades of one rubric by two models would be merged per transcript: refuse rather than mix them."""
    if not (out_dir / DB_NAME).exists():
        return
    with Store.open(out_dir) as store:
        others = {g.model for g in store.iter_grades(rubric_hash=rubric.content_hash)} - {model}
    if others:
        raise ConfigError(
            f"{out_dir} already holds grades of rubric {rubric.id} by {', '.join(sorted(others))}; "
            f"check model {model} in another --out folder"
        )


# --- the analysis -----------------------------------------------------------------------------


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
) -> Assessment:
    """Every statistic of the check from the labels and the stored judge scores; no I/O."""
    units = labels.transcripts()
    row = {u: i for i, u in enumerate(units)}
    scores = UnitScores(units=units, judge={}, human={}, levels={})
    criteria: list[CriterionCheck] = []
    notes: list[str] = []
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
            notes.append(f"nobody labelled {c.id} ({c.name}): it has no verdict")
    graded = [u for u in units if any(v is not None for v in judge.get(u, {}).get(0, {}).values())]
    if len(graded) < len(units):
        missing = sorted(set(units) - set(graded))
        shown = ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
        notes.append(f"{len(missing)} labelled transcript(s) have no scored judge grade (unscored or rejected "
                     f"as input; see rejects.jsonl): {shown}")
    result = CheckResult(
        created_at=datetime.now(UTC), rubric_id=rubric.id, rubric_version=rubric.version, rubric_name=rubric.name,
        rubric_hash=rubric.content_hash, rubric_path=rubric_path, model=model, repeats=repeats, options=options,
        labels=len(labels.labels), label_rejects=len(labels.rejects), raters=labels.raters(),
        transcripts_labelled=len(units), transcripts_graded=len(graded), grading=grading, criteria=criteria,
        sums=_sum_checks(rubric, scores, options), differences=_differences(rubric, scores, options.top_differences),
        notes=notes,
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
        reason = ("one repeat per transcript: grade with --repeats 2 or more to measure it" if repeats < 2
                  else "no transcript has two scored repeats")
        return SelfConsistency(repeats=repeats, n=0, exact=math.nan, weighted_kappa=math.nan,
                               alpha_ordinal=math.nan, differ_share=math.nan, differ_ids=[], reason=reason)
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


VERDICT_RANK: dict[str, int] = {"not trusted": 0, "review": 1, "trusted": 2}


def criteria_below(result: CheckResult, floor: Verdict) -> list[CriterionCheck]:
    """Labelled criteria whose verdict is worse than `floor` (e.g. 'review' fails only 'not trusted').

    The same verdict the report shows decides the gate. Criteria nobody labelled are not judged here
    (the check lists them in its notes).
    """
    return [c for c in result.criteria if c.verdict is not None and VERDICT_RANK[c.verdict] < VERDICT_RANK[floor]]


# --- two wordings of a rubric -----------------------------------------------------------------


COMPARED_METRICS = ("weighted_kappa", "exact", "mae", "bias", "spearman")
HIGHER_IS_BETTER = {"weighted_kappa": True, "exact": True, "spearman": True, "mae": False}
"""Metrics where one direction is better; bias is read by its distance from 0 and only reported."""
FlipDirection = Literal["towards", "away", "both wrong"]


class RubricRef(_Model):
    """One rubric of a comparison."""

    rubric_id: str = Field(description="Rubric id.")
    version: str = Field(description="Rubric version.")
    name: str = Field(description="Display name.")
    path: str = Field(description="The rubric file.")
    label: str = Field(description="The wording's name for people: the file name.")
    rubric_hash: str = Field(description="Content hash.")
    folder: str = Field(description="The sub-folder holding this rubric's store and reports.")


class Flip(_Model):
    """A transcript whose judge grade changed between the two wordings."""

    transcript_id: str = Field(description="The transcript.")
    score_a: int = Field(description="Points under rubric A (repeat 0).")
    score_b: int = Field(description="Points under rubric B (repeat 0).")
    human: float = Field(description="The human points (under rubric B's labels, consensus with several raters).")
    direction: FlipDirection = Field(
        description="B moved towards the human (closer than A), away (farther), or both wrong (equally far)."
    )
    moved: float = Field(description="|A − human| − |B − human| in points: positive towards the human.")
    level_a: str = Field(default="", description="Rubric A's description of the level A gave.")
    level_b: str = Field(default="", description="Rubric B's description of the level B gave.")


class CriterionShift(_Model):
    """How one criterion's agreement with the humans moved from wording A to wording B."""

    criterion_id: str = Field(description="Criterion id, the same in both rubrics.")
    name_a: str = Field(description="Display name in A.")
    name_b: str = Field(description="Display name in B.")
    n: int = Field(description="Transcripts with a human score and a judge score under both wordings.")
    left_out: list[str] = Field(
        default=[], description="Transcripts labelled for both wordings but missing a judge or human score."
    )
    weighted_kappa_a: float = Field(description="Weighted kappa under A on those transcripts.")
    weighted_kappa_b: float = Field(description="Weighted kappa under B on those transcripts.")
    delta: CI = Field(description="B − A with a paired bootstrap interval (same transcripts in each resample).")
    metrics: list[PairedDelta] = Field(
        default=[], description="Every compared metric under A and B, and B − A with a paired interval."
    )
    sentence: str = Field(default="", description="Which wording is better, by how much and how sure, in Chinese.")
    flips: list[Flip] = Field(description="Of the n transcripts, those graded differently, largest move first.")


class RubricComparison(_Model):
    """Rubric A against rubric B on the same labelled transcripts."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Bumped when this layout changes.")
    created_at: datetime = Field(description="When it was computed (UTC).")
    model: str = Field(description="The judge model (the same for both).")
    a: RubricRef = Field(description="The first rubric.")
    b: RubricRef = Field(description="The second rubric.")
    options: CheckOptions = Field(description="Bootstrap settings used.")
    criteria: list[CriterionShift] = Field(description="Criteria present in both rubrics, in A's order.")
    only_in_a: list[str] = Field(description="Criterion ids only A has.")
    only_in_b: list[str] = Field(description="Criterion ids only B has.")
    notes: list[str] = Field(description="Things a reader should know about this comparison.")


def rubric_folders(out_dir: Path, rubric_paths: Sequence[Path]) -> list[Path]:
    """One sub-folder of OUT per rubric, named after the file; numbered when two files share a name."""
    stems = [p.stem for p in rubric_paths]
    return [out_dir / (s if stems.count(s) == 1 else f"{i + 1}-{s}") for i, s in enumerate(stems)]


def _flip(tid: str, a: float, b: float, h: float, levels: tuple[dict[int, str], dict[int, str]]) -> Flip:
    moved = abs(a - h) - abs(b - h)
    direction: FlipDirection = "towards" if moved > 0 else "away" if moved < 0 else "both wrong"
    return Flip(transcript_id=tid, score_a=int(a), score_b=int(b), human=h, direction=direction, moved=moved,
                level_a=levels[0].get(int(a), ""), level_b=levels[1].get(int(b), ""))


def _level_texts(rubric: Rubric | None, cid: str) -> dict[int, str]:
    if rubric is None:
        return {}
    return {lv.points: lv.description for lv in rubric.criterion(cid).levels_ascending()}


def shift_sentence(deltas: Sequence[PairedDelta], label_a: str, label_b: str) -> str:
    """Which wording is better on the metrics whose interval excludes 0, and where they disagree (Chinese)."""
    def detail(d: PairedDelta) -> str:
        return message("ab.detail", metric=message(f"metric.{d.metric}"), delta=number(d.delta.estimate, signed=True),
                       low=number(d.delta.low, signed=True), high=number(d.delta.high, signed=True))

    better = [d for d in deltas if d.metric in HIGHER_IS_BETTER
              and (d.delta.low > 0 if HIGHER_IS_BETTER[d.metric] else d.delta.high < 0)]
    worse = [d for d in deltas if d.metric in HIGHER_IS_BETTER
             and (d.delta.high < 0 if HIGHER_IS_BETTER[d.metric] else d.delta.low > 0)]
    if better and worse:
        head = message("ab.mixed", better="、".join(detail(d) for d in better),
                       worse="、".join(detail(d) for d in worse))
    elif better or worse:
        head = message("ab.better", wording=label_b if better else label_a,
                       details="、".join(detail(d) for d in better or worse))
    else:
        kappa = next((d for d in deltas if d.metric == "weighted_kappa"), None)
        head = message("ab.no_difference", details=detail(kappa) if kappa else "")
    bias = next((d for d in deltas if d.metric == "bias"), None)
    if bias is not None and not math.isnan(bias.a):
        head += message("ab.bias", a=number(bias.a, signed=True), b=number(bias.b, signed=True))
    return head


def compare_rubrics(a: CheckRun, b: CheckRun, options: CheckOptions = DEFAULT_OPTIONS,
                    rubrics: tuple[Rubric, Rubric] | None = None) -> RubricComparison:
    """Per shared criterion, every compared metric from A to B with a paired bootstrap interval, a sentence
    saying which wording is better, and the flipped transcripts grouped by whether B moved towards the humans.
    `rubrics` (A's and B's) adds each flipped grade's level descriptions."""
    shared = [cid for cid in a.scores.judge if cid in b.scores.judge]
    index_b = {u: i for i, u in enumerate(b.scores.units)}
    common = [u for u in a.scores.units if u in index_b]
    ia = np.array([a.scores.units.index(u) for u in common], dtype=np.int64)
    ib = np.array([index_b[u] for u in common], dtype=np.int64)
    names_a = {c.criterion_id: c.name for c in a.result.criteria}
    names_b = {c.criterion_id: c.name for c in b.result.criteria}
    label_a, label_b = _label(a), _label(b)
    shifts = []
    for cid in shared:
        ja, ha = a.scores.judge[cid][ia], a.scores.human[cid][ia]
        jb, hb = b.scores.judge[cid][ib], b.scores.human[cid][ib]
        mean_b = b.scores.human_mean.get(cid, b.scores.human[cid])[ib]
        keep = ~(np.isnan(ja) | np.isnan(ha) | np.isnan(jb) | np.isnan(hb))
        n, deltas = paired_deltas(ja, jb, np.where(keep, hb, np.nan), a.scores.levels[cid], b.scores.levels[cid],
                                     COMPARED_METRICS, human_numeric=mean_b, n_resamples=options.n_resamples,
                                     seed=options.seed, confidence=options.confidence)
        kappa = deltas[0]
        texts = (_level_texts(rubrics[0], cid), _level_texts(rubrics[1], cid)) if rubrics else ({}, {})
        flips = [_flip(common[k], ja[k], jb[k], hb[k], texts) for k in range(len(common)) if keep[k] and ja[k] != jb[k]]
        flips.sort(key=lambda f: (-abs(f.moved), f.transcript_id))
        shifts.append(CriterionShift(
            criterion_id=cid, name_a=names_a[cid], name_b=names_b[cid], n=n,
            left_out=[u for u, k, h in zip(common, keep, hb, strict=True) if not k and not np.isnan(h)],
            weighted_kappa_a=kappa.a, weighted_kappa_b=kappa.b, delta=kappa.delta, metrics=deltas,
            sentence=shift_sentence(deltas, label_a, label_b), flips=flips,
        ))
    compared = max((s.n for s in shifts), default=0)
    notes = [f"only transcripts labelled for both wordings and graded under both are compared: {compared} "
             f"(per criterion n; left-out transcripts are listed per criterion)"]
    if a.result.model != b.result.model:
        notes.append(f"the two rubrics were graded by different models ({a.result.model}, {b.result.model})")
    return RubricComparison(
        created_at=datetime.now(UTC), model=b.result.model, a=_ref(a), b=_ref(b), options=options, notes=notes,
        criteria=shifts, only_in_a=[c for c in a.scores.judge if c not in b.scores.judge],
        only_in_b=[c for c in b.scores.judge if c not in a.scores.judge],
    )


def _label(run: CheckRun) -> str:
    return Path(run.result.rubric_path).name


def _ref(run: CheckRun) -> RubricRef:
    r = run.result
    return RubricRef(rubric_id=r.rubric_id, version=r.rubric_version, name=r.rubric_name, path=r.rubric_path,
                     label=_label(run), rubric_hash=r.rubric_hash, folder=str(run.out_dir))


@dataclass(frozen=True)
class ComparisonRun:
    """Two checks of the same labelled set and how they differ."""

    runs: tuple[CheckRun, CheckRun]
    comparison: RubricComparison


async def run_comparison(
    job: CheckJob,
    rubric_b: Path,
    settings: Settings,
    *,
    options: CheckOptions = DEFAULT_OPTIONS,
    progress: ProgressSink | None = None,
    on_endpoint: Callable[[ResolvedEndpoint], None] | None = None,
) -> ComparisonRun:
    """Check `job.rubric_path` and `rubric_b` on the same labels, each in its own sub-folder of `job.out_dir`."""
    folders = rubric_folders(job.out_dir, [job.rubric_path, rubric_b])
    runs = []
    for path, folder in zip((job.rubric_path, rubric_b), folders, strict=True):
        runs.append(await run_check(replace(job, rubric_path=path, out_dir=folder), settings, options=options,
                                    progress=progress, on_endpoint=on_endpoint))
    a, b = runs
    rubrics = (load_rubric(job.rubric_path), load_rubric(rubric_b))
    return ComparisonRun(runs=(a, b), comparison=compare_rubrics(a, b, options, rubrics))
