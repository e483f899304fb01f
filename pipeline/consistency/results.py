"""What a consistency check finds: the models agreement.json holds, and the verdict gate read from them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.agreement.alt_test import AltTestResult
from pipeline.agreement.baselines import BaselineAgreement
from pipeline.agreement.results import CONSENSUS_RULE, HumanAgreement, IccResult, PairAgreement
from pipeline.agreement.verdict import DEFAULT_THRESHOLDS, Verdict, VerdictThresholds
from pipeline.consistency.verdict import CriterionVerdict
from pipeline.grading.fingerprint import JudgeFingerprint
from pipeline.grading.runner import RunSummary
from pipeline.models.strict import StrictModel
from pipeline.report.messages import Message

FloatArray = npt.NDArray[np.float64]
JudgeScores = Mapping[str, Mapping[int, Mapping[str, int | None]]]
"""Stored judge scores: transcript id → repeat → criterion id → points (None when unscored)."""

JUDGE_SCORE_RULE = "repeat 0 of the judge's grades (the other repeats measure self-consistency only)"
HUMAN_SCORE_RULE = f"the single rater's score; with several raters their consensus: {CONSENSUS_RULE}"
SCHEMA_VERSION: Literal[1] = 1


class CheckOptions(StrictModel):
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


class SelfConsistency(StrictModel):
    """How well the judge agrees with itself across independent repeats of the same grade."""

    repeats: int = Field(description="Repeats requested per transcript.")
    n: int = Field(description="Transcripts with at least two scored repeats of this criterion.")
    exact: float = Field(description="Share of transcripts where two repeats agree, mean over repeat pairs.")
    weighted_kappa: float = Field(description="Quadratic-weighted kappa between repeats, mean over repeat pairs.")
    alpha_ordinal: float = Field(description="Krippendorff's ordinal alpha over all repeats.")
    differ_share: float = Field(description="Share of the n transcripts whose repeats do not all agree.")
    differ_ids: list[str] = Field(description="Those transcripts, sorted.")
    reason: str | None = Field(default=None, description="Why there is nothing to measure, when there is not.")


class HumanCeiling(StrictModel):
    """Agreement among the human raters: the best a judge can be expected to reach."""

    pairwise: HumanAgreement = Field(description="Every pair of raters on the transcripts both scored.")
    vs_consensus: HumanAgreement = Field(description="Each rater against the consensus of the others.")


class CriterionCheck(StrictModel):
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


class SumCheck(StrictModel):
    """Judge versus human on a group's, a dimension's or the rubric's total."""

    sum_id: str = Field(description="Group or dimension id, or 'total'.")
    kind: Literal["group", "dimension", "total"] = Field(description="What is summed.")
    name: str = Field(description="Display name.")
    max_points: int = Field(description="The sum's maximum.")
    judge_vs_human: PairAgreement = Field(description="Every metric over the achievable sums as levels.")
    icc: IccResult = Field(description="ICC(A,1) of judge and human sums.")


class CriterionGap(StrictModel):
    """One criterion where judge and human gave different points."""

    criterion_id: str = Field(description="Rubric criterion id.")
    judge: int = Field(description="The judge's points (repeat 0).")
    human: float = Field(description="The human points (consensus with several raters).")


class Difference(StrictModel):
    """A transcript where judge and human disagree, for the report's "differ most" list."""

    transcript_id: str = Field(description="The transcript.")
    gap: float = Field(description="Σ |judge − human| in points over the criteria both scored.")
    judge_total: float | None = Field(description="The judge's total, when every criterion is scored.")
    human_total: float | None = Field(description="The human total, when every criterion is labelled.")
    criteria: list[CriterionGap] = Field(description="The criteria that differ, in rubric order.")


class CheckResult(StrictModel):
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
    notes: list[Message] = Field(description="Things a reader should know about this check, as messages.")
    needs_review: list[str] = Field(
        default=[], description="Labelled transcripts left out of every statistic: a field of the chat addresses the "
                                "grader (prompt injection suspected), so the judge's grade is not trusted."
    )


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


VERDICT_RANK: dict[str, int] = {"not trusted": 0, "review": 1, "trusted": 2}


def criteria_below(result: CheckResult, floor: Verdict) -> list[CriterionCheck]:
    """Labelled criteria whose verdict is worse than `floor` (e.g. 'review' fails only 'not trusted').

    The same verdict the report shows decides the gate. Criteria nobody labelled are not judged here
    (the check lists them in its notes).
    """
    return [c for c in result.criteria if c.verdict is not None and VERDICT_RANK[c.verdict] < VERDICT_RANK[floor]]
