"""The result models of the agreement statistics: intervals, metric sets, comparisons, the human ceiling."""

from __future__ import annotations

from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

SCORE_AS_GIVEN = "the human score as given"
CONSENSUS_RULE = (
    "level-based metrics (exact, adjacent, both kappas, ordinal alpha) against the raters' median level, "
    "rounded down when it falls halfway between two levels; point-based metrics (MAE, bias, Spearman, "
    "Kendall, interval alpha) against the raters' mean"
)
"""How a score is compared with several raters; the judge (all raters) and each rater (the others) alike."""


class Result(BaseModel):
    """Frozen and strict: every result model of the agreement statistics."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class CI(Result):
    """A point estimate with a percentile bootstrap interval over resampled units."""

    estimate: float = Field(description="The metric on the data as given; NaN when undefined.")
    low: float = Field(description="Lower end of the interval; NaN when no resample was defined.")
    high: float = Field(description="Upper end of the interval; NaN when no resample was defined.")
    confidence: float = Field(description="Coverage of the interval, e.g. 0.95.")
    resamples: int = Field(description="Resamples the interval was computed from (the defined ones).")
    dropped: int = Field(description="Resamples left out because the metric was undefined (NaN) on them.")
    reason: str | None = Field(default=None, description="Why the estimate is undefined, when it is.")


V = TypeVar("V", float, CI)


class Metrics(Result, Generic[V]):
    """The agreement metrics of one comparison, each a plain value or a CI."""

    exact: V = Field(description="Share of units given the same level.")
    adjacent: V = Field(description="Share of units whose levels are at most one level apart.")
    kappa: V = Field(description="Cohen's kappa, unweighted.")
    weighted_kappa: V = Field(description="Cohen's kappa with quadratic weights over level order.")
    alpha_ordinal: V = Field(description="Krippendorff's alpha, ordinal metric over the levels.")
    alpha_interval: V = Field(description="Krippendorff's alpha, interval metric over the points.")
    spearman: V = Field(description="Spearman's rank correlation (ties get average ranks).")
    kendall: V = Field(description="Kendall's tau-b.")
    mae: V = Field(description="Mean absolute difference in points.")
    bias: V = Field(description="Mean signed difference in points, first side minus second (judge − human).")


class PairAgreement(Result):
    """Judge versus human on one criterion: every metric with its bootstrap interval."""

    n: int = Field(description="Units with both a judge and a human score; the others are left out.")
    levels: list[float] = Field(description="The criterion's level points, ascending; confusion axes.")
    consensus: str = Field(
        default=SCORE_AS_GIVEN, description="What the human side is: the metrics' reference, named."
    )
    metrics: Metrics[CI] = Field(description="Each metric with its interval.")
    confusion: list[list[int]] = Field(description="Counts: rows are the judge's level, columns the human's.")


class IccResult(Result):
    """ICC(A,1) of judge and human totals with pingouin's analytic 95% interval."""

    estimate: float = Field(description="ICC(A,1), two-way random effects, absolute agreement, single rater.")
    low: float = Field(
        description="Lower end of the 95% interval (McGraw & Wong, as pingouin rounds it: 2 dp)."
    )
    high: float = Field(description="Upper end of the 95% interval (2 dp).")
    n: int = Field(description="Units with both totals.")
    reason: str | None = Field(default=None, description="Why the ICC is undefined, when it is.")


class RaterComparison(Result):
    """One rater against another rater, or against the consensus of the others."""

    rater: str = Field(description="The rater's id.")
    other: str = Field(description="The other rater's id, or 'consensus' for the rest of the raters.")
    n: int = Field(description="Units both sides scored.")
    metrics: Metrics[float] = Field(description="The metrics of this comparison (bias: rater − other).")


class HumanAgreement(Result):
    """How far humans agree among themselves: the ceiling a judge is read against."""

    method: Literal["pairwise", "rater vs consensus"] = Field(description="How raters were compared.")
    consensus: str | None = Field(
        default=None, description="With 'rater vs consensus': what each rater is compared with (the others')."
    )
    n_raters: int = Field(description="Raters with at least one score.")
    mean: Metrics[float] = Field(
        description="Unweighted mean over the comparisons, ignoring undefined ones. Its `bias` is the mean "
        "of |bias|: pair order is arbitrary, so signed biases would cancel."
    )
    comparisons: list[RaterComparison] = Field(description="Each comparison that shared at least one unit.")
    reason: str | None = Field(
        default=None, description="Why there is nothing to average, when there is not."
    )


class PairedDelta(Result):
    """One metric under two judges (e.g. two rubric wordings) on the same units, and B − A."""

    metric: str = Field(description="Metric name, as in Metrics.")
    a: float = Field(description="The metric for judge A.")
    b: float = Field(description="The metric for judge B.")
    delta: CI = Field(description="B − A with a paired bootstrap interval: each resample draws the same units.")

