"""Agreement statistics between a judge and human raters, as pure functions of score arrays.

Conventions every function here follows:

- A score array is 1-D, float, with NaN for "no score". Paired metrics use only the units (transcripts)
  where both sides have a score.
- `levels` is a criterion's allowed points, ascending. Level-based metrics (adjacent agreement, both
  kappas, ordinal alpha, the confusion matrix) use the *order* of the levels, so on levels 0/3/5 a 0
  and a 3 are adjacent and the quadratic kappa weights them 1, not 9. Point-based metrics (MAE, bias,
  interval alpha, the correlations) use the points themselves.
- Several raters on the same units come as a units × raters matrix with NaN for "not labelled", the
  shape `LabelSet.matrix` returns (Krippendorff's `reliability_data` is its transpose).
- Undefined is NaN, never an exception: kappa when both sides gave every unit one and the same level
  (chance agreement is 1); Spearman/Kendall when either side is constant; alpha when there is no
  variation at all or no unit with two scores; every metric when no unit has both scores, and all
  but exact/adjacent/MAE/bias when only one does. `compare_scores` attaches the reason in words.
  A score that is not one of the levels is a caller's bug and raises ValueError.

Point estimates come from the well-kept implementations (scikit-learn, scipy, krippendorff,
pingouin, statsmodels). The bootstrap behind `compare_scores` recomputes the same formulas from
resampled confusion matrices in numpy instead of calling those libraries 1,000 times per metric:
the libraries cost 0.4-2.6 ms a call, which for 11 criteria × 10 metrics × 1,000 resamples is
minutes, while every paired metric here is a function of the level × level confusion matrix.
Tests pin the two against each other on identical resamples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from itertools import combinations
from typing import Any, Generic, Literal, TypeVar

import krippendorff
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

# scipy.stats, sklearn.metrics, statsmodels and pandas are imported inside the functions that use
# them: together they cost seconds at start-up, and most `kefu` commands never compute a statistic.

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

_CORRELATIONS = frozenset({"spearman", "kendall"})
_DEFINED_FOR_ONE = frozenset({"exact", "adjacent", "mae", "bias"})


SCORE_AS_GIVEN = "the human score as given"
CONSENSUS_RULE = (
    "level-based metrics (exact, adjacent, both kappas, ordinal alpha) against the raters' median level, "
    "rounded down when it falls halfway between two levels; point-based metrics (MAE, bias, Spearman, "
    "Kendall, interval alpha) against the raters' mean"
)
"""How a score is compared with several raters; the judge (all raters) and each rater (the others) alike."""


class _Result(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CI(_Result):
    """A point estimate with a percentile bootstrap interval over resampled units."""

    estimate: float = Field(description="The metric on the data as given; NaN when undefined.")
    low: float = Field(description="Lower end of the interval; NaN when no resample was defined.")
    high: float = Field(description="Upper end of the interval; NaN when no resample was defined.")
    confidence: float = Field(description="Coverage of the interval, e.g. 0.95.")
    resamples: int = Field(description="Resamples the interval was computed from (the defined ones).")
    dropped: int = Field(description="Resamples left out because the metric was undefined (NaN) on them.")
    reason: str | None = Field(default=None, description="Why the estimate is undefined, when it is.")


V = TypeVar("V", float, CI)


class Metrics(_Result, Generic[V]):
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


class PairAgreement(_Result):
    """Judge versus human on one criterion: every metric with its bootstrap interval."""

    n: int = Field(description="Units with both a judge and a human score; the others are left out.")
    levels: list[float] = Field(description="The criterion's level points, ascending; confusion axes.")
    consensus: str = Field(
        default=SCORE_AS_GIVEN, description="What the human side is: the metrics' reference, named."
    )
    metrics: Metrics[CI] = Field(description="Each metric with its interval.")
    confusion: list[list[int]] = Field(description="Counts: rows are the judge's level, columns the human's.")


class IccResult(_Result):
    """ICC(A,1) of judge and human totals with pingouin's analytic 95% interval."""

    estimate: float = Field(description="ICC(A,1), two-way random effects, absolute agreement, single rater.")
    low: float = Field(
        description="Lower end of the 95% interval (McGraw & Wong, as pingouin rounds it: 2 dp)."
    )
    high: float = Field(description="Upper end of the 95% interval (2 dp).")
    n: int = Field(description="Units with both totals.")
    reason: str | None = Field(default=None, description="Why the ICC is undefined, when it is.")


class RaterComparison(_Result):
    """One rater against another rater, or against the consensus of the others."""

    rater: str = Field(description="The rater's id.")
    other: str = Field(description="The other rater's id, or 'consensus' for the rest of the raters.")
    n: int = Field(description="Units both sides scored.")
    metrics: Metrics[float] = Field(description="The metrics of this comparison (bias: rater − other).")


class HumanAgreement(_Result):
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


class AnnotatorTest(_Result):
    """The alt-test for one left-out human annotator."""

    rater: str = Field(description="The left-out annotator.")
    n_units: int = Field(
        description="Units scored by this annotator, the judge and at least one other annotator."
    )
    llm_advantage: float = Field(
        description="Share of those units where the judge aligns with the others at least as well."
    )
    human_advantage: float = Field(
        description="Share where the annotator aligns with the others at least as well."
    )
    p_value: float = Field(description="One-sided paired t-test of H0: llm_advantage ≤ human_advantage − ε.")
    p_adjusted: float = Field(description="p_value after Benjamini–Yekutieli correction across annotators.")
    won: bool = Field(description="The judge wins: H0 rejected at the FDR level after correction.")


ALT_TEST_RULE = (
    "Calderon, Reichart & Dror (ACL 2025) with the paper's scoring of alignment per chat, plus one requirement "
    "of ours: the judge must also rank the chats like the annotators (Spearman with their mean above 0 at "
    "the FDR level q). Per-chat alignment rewards a prediction near the centre when annotators disagree "
    "within a chat more than chats differ, so a constant judge can win every annotator; it cannot rank."
)


class AltTestResult(_Result):
    """The Alternative Annotator Test (Calderon, Reichart & Dror, ACL 2025) for one criterion."""

    alignment: Literal["neg_rmse", "accuracy"] = Field(
        description="How alignment with the other annotators is scored."
    )
    epsilon: float = Field(description="Cost-benefit margin ε granted to the judge.")
    q: float = Field(description="FDR level of the Benjamini–Yekutieli correction.")
    annotators: list[AnnotatorTest] = Field(description="One test per annotator with enough units.")
    skipped: dict[str, str] = Field(description="Annotators left out of the test, with the reason.")
    winning_rate: float = Field(
        description="ω: share of tested annotators the judge wins against; NaN if none."
    )
    advantage_probability: float = Field(description="ρ: mean over tested annotators of llm_advantage.")
    discrimination: float = Field(
        description="Spearman of the judge with the annotators' mean over the units it scored; NaN if constant."
    )
    discrimination_p: float = Field(
        description="One-sided p of H0: discrimination ≤ 0 (scipy.stats.spearmanr); 1 when undefined."
    )
    rule: str = Field(default=ALT_TEST_RULE, description="When the test passes, and why, with its reference.")
    passed: bool = Field(
        description="ω ≥ 0.5 over at least three tested annotators and discrimination_p < q: the judge "
        "may replace one."
    )
    reason: str | None = Field(
        default=None, description="Why the test could not pass regardless of ω, if so."
    )


class VerdictThresholds(_Result):
    """Where the weighted-kappa verdict changes; configurable per project."""

    trusted_estimate: float = Field(
        default=0.6, description="Trusted needs the point estimate at least this."
    )
    trusted_low: float = Field(default=0.4, description="…and the interval's lower end at least this.")
    not_trusted_below: float = Field(
        default=0.4, description="Not trusted when the point estimate is below this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> VerdictThresholds:
        if self.not_trusted_below > self.trusted_estimate:
            raise ValueError("not_trusted_below must not exceed trusted_estimate")
        return self


Verdict = Literal["trusted", "review", "not trusted"]
DEFAULT_THRESHOLDS = VerdictThresholds()


# --- input checks -----------------------------------------------------------------------------


def _levels(levels: Sequence[float]) -> FloatArray:
    points = np.asarray(levels, dtype=np.float64)
    if points.ndim != 1 or points.size < 2 or not np.all(np.isfinite(points)) or np.any(np.diff(points) <= 0):
        raise ValueError(f"levels must be at least two ascending distinct points, got {list(levels)}")
    return points


def _indices(scores: FloatArray, points: FloatArray) -> IntArray:
    """Level index of each (non-missing) score; ValueError naming any score that is not a level."""
    idx = np.clip(np.searchsorted(points, scores), 0, points.size - 1)
    bad = scores[points[idx] != scores]
    if bad.size:
        raise ValueError(f"scores {sorted(set(bad.tolist()))} are not among the levels {points.tolist()}")
    return idx.astype(np.int64)


def _require_levels(points: FloatArray, *scores: FloatArray) -> None:
    for s in scores:
        _indices(s, points)


def _paired(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired score arrays differ in length: {x.size} and {y.size}")
    both = ~(np.isnan(x) | np.isnan(y))
    return x[both], y[both]


def _matrix(ratings: npt.ArrayLike) -> FloatArray:
    m = np.asarray(ratings, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"ratings must be a units × raters matrix, got shape {m.shape}")
    return m


# --- point metrics (the well-kept implementations) --------------------------------------------


def exact_agreement(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Share of units where both sides gave the same score."""
    x, y = _paired(a, b)
    return float(np.mean(x == y)) if x.size else math.nan


def adjacent_agreement(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float]) -> float:
    """Share of units whose levels differ by at most one level (not one point)."""
    points = _levels(levels)
    x, y = _paired(a, b)
    if not x.size:
        return math.nan
    return float(np.mean(np.abs(_indices(x, points) - _indices(y, points)) <= 1))


def _sklearn_kappa(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float], weights: str | None) -> float:
    points = _levels(levels)
    x, y = _paired(a, b)
    _require_levels(points, x, y)
    if x.size < 2:  # one unit gives κ = 0 or NaN, neither of which says anything
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined kappa → sklearn warns and returns NaN, which we document
        from sklearn.metrics import cohen_kappa_score

        return float(cohen_kappa_score(x, y, labels=points, weights=weights))


def cohen_kappa(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float]) -> float:
    """Cohen's kappa, unweighted."""
    return _sklearn_kappa(a, b, levels, None)


def weighted_kappa(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float]) -> float:
    """Cohen's kappa with quadratic weights; sklearn weights by position in `levels`, i.e. level order."""
    return _sklearn_kappa(a, b, levels, "quadratic")


def _alpha(units_by_raters: FloatArray, level: Literal["nominal", "ordinal", "interval"]) -> float:
    """krippendorff.alpha without value checks; NaN where it would raise or divide 0 by 0."""
    pairable = units_by_raters[np.sum(~np.isnan(units_by_raters), axis=1) >= 2]
    values = pairable[~np.isnan(pairable)]
    if pairable.shape[0] < 2 or np.unique(values).size < 2:
        return math.nan
    domain = np.unique(units_by_raters[~np.isnan(units_by_raters)])
    return float(
        krippendorff.alpha(
            reliability_data=units_by_raters.T, value_domain=domain, level_of_measurement=level
        )
    )


def krippendorff_alpha(
    ratings: npt.ArrayLike,
    levels: Sequence[float],
    level: Literal["nominal", "ordinal", "interval"] = "ordinal",
) -> float:
    """Krippendorff's alpha of a units × raters matrix with NaN for missing scores.

    Units with fewer than two scores are not pairable and do not count, as in Krippendorff (2011);
    NaN with fewer than two pairable units.
    """
    m = _matrix(ratings)
    _require_levels(_levels(levels), m[~np.isnan(m)])
    return _alpha(m, level)


def _correlation(fn: Callable[..., Any], a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = _paired(a, b)
    if x.size < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(fn(x, y).statistic)


def spearman(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Spearman's rank correlation; NaN if either side is constant."""
    from scipy import stats

    return _correlation(stats.spearmanr, a, b)


def kendall(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Kendall's tau-b (ties corrected); NaN if either side is constant."""
    from scipy import stats

    return _correlation(stats.kendalltau, a, b)


def mean_absolute_error(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Mean |a − b| in points."""
    x, y = _paired(a, b)
    return float(np.mean(np.abs(x - y))) if x.size else math.nan


def mean_bias(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Mean (a − b) in points: positive when a (the judge) scores higher than b (the human)."""
    x, y = _paired(a, b)
    return float(np.mean(x - y)) if x.size else math.nan


def confusion(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float]) -> IntArray:
    """Counts of (a's level, b's level); rows follow a, columns b, both in level order."""
    points = _levels(levels)
    x, y = _paired(a, b)
    _require_levels(points, x, y)
    if not x.size:
        return np.zeros((points.size, points.size), dtype=np.int64)
    from sklearn.metrics import confusion_matrix

    return np.asarray(confusion_matrix(x, y, labels=points), dtype=np.int64)


def _metric_bundle(
    x: FloatArray, y: FloatArray, levels: Sequence[float], y_numeric: FloatArray | None = None
) -> Metrics[float]:
    """All metrics of x against y; `y_numeric` (same units) replaces y for the point-based metrics."""
    yn = y if y_numeric is None else y_numeric
    return Metrics[float](
        exact=exact_agreement(x, y),
        adjacent=adjacent_agreement(x, y, levels),
        kappa=cohen_kappa(x, y, levels),
        weighted_kappa=weighted_kappa(x, y, levels),
        alpha_ordinal=krippendorff_alpha(np.column_stack([x, y]), levels, "ordinal"),
        alpha_interval=_alpha(np.column_stack([x, yn]), "interval"),
        spearman=spearman(x, yn),
        kendall=kendall(x, yn),
        mae=mean_absolute_error(x, yn),
        bias=mean_bias(x, yn),
    )


def _undefined_reason(metric: str, x: FloatArray, y: FloatArray) -> str:
    if x.size == 0:
        return "no transcript has both a judge and a human score"
    if x.size == 1 and metric not in _DEFINED_FOR_ONE:
        return "only one transcript has both scores"
    if metric in _CORRELATIONS:
        constant = [side for side, s in (("judge", x), ("human", y)) if np.ptp(s) == 0]
        return f"the {' and '.join(constant)} scores are all the same, so there is no ranking to correlate"
    return "every score on both sides is the same level, so there is no variation to agree on"


# --- bootstrap --------------------------------------------------------------------------------


def _resample_weights(n_rows: int, unit_index: npt.ArrayLike | None, n_resamples: int, seed: int) -> IntArray:
    """How often each row is drawn in each resample (n_resamples × n_rows), drawing whole units."""
    if unit_index is None:
        row_unit = np.arange(n_rows)
    else:
        _, row_unit = np.unique(np.asarray(unit_index), return_inverse=True)
        if row_unit.size != n_rows:
            raise ValueError(f"unit_index has {row_unit.size} entries for {n_rows} rows")
    n_units = int(row_unit.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_units, size=(n_resamples, n_units))
    offsets = np.arange(n_resamples)[:, None] * n_units
    counts = np.bincount((draws + offsets).ravel(), minlength=n_resamples * n_units)
    return counts.reshape(n_resamples, n_units)[:, row_unit].astype(np.int64)


def _percentile_ci(estimate: float, values: FloatArray, confidence: float, reason: str | None = None) -> CI:
    defined = values[np.isfinite(values)]
    low, high = (
        np.percentile(defined, [50 * (1 - confidence), 50 * (1 + confidence)])
        if defined.size
        else (math.nan,) * 2
    )
    return CI(
        estimate=estimate,
        low=float(low),
        high=float(high),
        confidence=confidence,
        resamples=int(defined.size),
        dropped=int(values.size - defined.size),
        reason=reason,
    )


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: npt.ArrayLike,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    unit_index: npt.ArrayLike | None = None,
) -> CI:
    """Percentile bootstrap interval of `metric_fn(*arrays)`, resampling units (transcripts) with replacement.

    The arrays are resampled together, row for row. With `unit_index` (one unit id per row) whole units
    are drawn, so several rows of one transcript stay together. Resamples where the metric is NaN are
    dropped and counted. The same seed gives the same resamples here and in `compare_scores`.
    """
    columns = [np.asarray(a) for a in arrays]
    n_rows = columns[0].shape[0] if columns else 0
    if any(c.shape[0] != n_rows for c in columns):
        raise ValueError("bootstrap arrays differ in length")
    if n_rows == 0:
        return _percentile_ci(math.nan, np.array([]), confidence, reason="no data")
    estimate = float(metric_fn(*columns))
    rows = np.arange(n_rows)
    weights = _resample_weights(n_rows, unit_index, n_resamples, seed)
    values = np.array(
        [metric_fn(*(c[np.repeat(rows, w)] for c in columns)) for w in weights], dtype=np.float64
    )
    return _percentile_ci(estimate, values, confidence)


def _resampled_metrics(
    weights: IntArray, xi: IntArray, yi: IntArray, points: FloatArray
) -> dict[str, FloatArray]:
    """Every paired metric on every resample at once, from the resampled level × level confusion matrices.

    The formulas are the textbook ones the libraries implement (sklearn's kappa, Krippendorff's
    coincidence-matrix alpha, Spearman as Pearson on mid-ranks, Kendall's tau-b from a contingency
    table); tests check them against the libraries on identical resamples.
    """
    k = points.size
    onehot = np.zeros((xi.size, k * k))
    onehot[np.arange(xi.size), xi * k + yi] = 1.0
    c = (weights @ onehot).reshape(-1, k, k)
    n = c.sum(axis=(1, 2))
    rows, cols = c.sum(axis=2), c.sum(axis=1)
    order = np.arange(k)
    gap = (order[:, None] - order[None, :]).astype(np.float64)
    diff = points[:, None] - points[None, :]

    def kappa(w: FloatArray) -> FloatArray:
        expected = np.einsum("bi,ij,bj->b", rows, w, cols) / n
        return np.asarray(1 - (c * w).sum(axis=(1, 2)) / expected, dtype=np.float64)

    def alpha(delta2: FloatArray) -> FloatArray:
        coincidences = c + c.transpose(0, 2, 1)
        n_v = rows + cols
        d2 = np.broadcast_to(delta2, c.shape)
        expected = np.einsum("bi,bij,bj->b", n_v, d2, n_v)
        return np.asarray(1 - (2 * n - 1) * (coincidences * d2).sum(axis=(1, 2)) / expected, dtype=np.float64)

    def ordinal_delta2() -> FloatArray:
        # δ_ck = Σ_{g=c..k} n_g − (n_c + n_k)/2 for c ≤ k; m is antisymmetric, so m² is δ² everywhere.
        n_v = rows + cols
        cum = np.cumsum(n_v, axis=1)
        m = cum[:, None, :] - cum[:, :, None] + (n_v[:, :, None] - n_v[:, None, :]) / 2
        return np.asarray(m**2, dtype=np.float64)

    def spearman_rho() -> FloatArray:
        mid = (n[:, None] + 1) / 2
        rx = np.cumsum(rows, axis=1) - rows + (rows + 1) / 2 - mid
        ry = np.cumsum(cols, axis=1) - cols + (cols + 1) / 2 - mid
        cov = np.einsum("bij,bi,bj->b", c, rx, ry)
        return np.asarray(
            cov / np.sqrt((rows * rx**2).sum(axis=1) * (cols * ry**2).sum(axis=1)), dtype=np.float64
        )

    def kendall_tau_b() -> FloatArray:
        above = c[:, ::-1, ::-1].cumsum(axis=1).cumsum(axis=2)[:, ::-1, ::-1]  # Σ over i' ≥ i, j' ≥ j
        mixed = c[:, ::-1, :].cumsum(axis=1)[:, ::-1, :].cumsum(axis=2)  # Σ over i' ≥ i, j' ≤ j
        concordant = (c[:, :-1, :-1] * above[:, 1:, 1:]).sum(axis=(1, 2))
        discordant = (c[:, :-1, 1:] * mixed[:, 1:, :-1]).sum(axis=(1, 2))
        pairs = n * (n - 1) / 2
        x_ties = (rows * (rows - 1) / 2).sum(axis=1)
        y_ties = (cols * (cols - 1) / 2).sum(axis=1)
        return np.asarray(
            (concordant - discordant) / np.sqrt((pairs - x_ties) * (pairs - y_ties)), dtype=np.float64
        )

    with np.errstate(divide="ignore", invalid="ignore"):
        out = {
            "exact": np.trace(c, axis1=1, axis2=2) / n,
            "adjacent": (c * (np.abs(gap) <= 1)).sum(axis=(1, 2)) / n,
            "kappa": kappa((gap != 0).astype(np.float64)),
            "weighted_kappa": kappa(gap**2),
            "alpha_ordinal": alpha(ordinal_delta2()),
            "alpha_interval": alpha(diff**2),
            "spearman": spearman_rho(),
            "kendall": kendall_tau_b(),
            "mae": (c * np.abs(diff)).sum(axis=(1, 2)) / n,
            "bias": (c * diff).sum(axis=(1, 2)) / n,
        }
    return {
        name: np.where(np.isfinite(v) & ((n >= 2) | (name in _DEFINED_FOR_ONE)), v, np.nan)
        for name, v in out.items()
    }


# --- judge versus human -----------------------------------------------------------------------


_POINT_BASED = ("alpha_interval", "spearman", "kendall", "mae", "bias")


def _side(
    judge: npt.ArrayLike, human: npt.ArrayLike, human_numeric: npt.ArrayLike | None, keep: npt.NDArray[np.bool_]
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The judge, human-level and human-numeric scores of the kept units."""
    h = np.asarray(human, dtype=np.float64).ravel()
    hn = h if human_numeric is None else np.asarray(human_numeric, dtype=np.float64).ravel()
    if hn.shape != h.shape:
        raise ValueError(f"human_numeric has {hn.size} scores for {h.size} units")
    return np.asarray(judge, dtype=np.float64).ravel()[keep], h[keep], hn[keep]


def _resampled(weights: IntArray, x: FloatArray, y: FloatArray, yn: FloatArray | None, points: FloatArray
               ) -> dict[str, FloatArray]:
    """Every metric on every resample; with `yn` (numeric human) the point-based ones use it."""
    resampled = _resampled_metrics(weights, _indices(x, points), _indices(y, points), points)
    if yn is not None:  # the same resamples over the values both sides take
        domain = np.unique(np.concatenate([points, yn]))
        numeric = _resampled_metrics(weights, np.searchsorted(domain, x), np.searchsorted(domain, yn), domain)
        resampled |= {name: numeric[name] for name in _POINT_BASED}
    return resampled


def compare_scores(
    judge: npt.ArrayLike,
    human: npt.ArrayLike,
    levels: Sequence[float],
    *,
    human_numeric: npt.ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairAgreement:
    """Every agreement metric of judge versus human on one criterion, each with a bootstrap interval.

    `human` must be levels. `human_numeric` (same units; e.g. the raters' mean) replaces it for the
    point-based metrics, as `rater_vs_consensus` does for each rater, so the judge and the raters are
    measured by the same definitions; `consensus` is then `CONSENSUS_RULE`. Units (transcripts) missing
    either score are left out; `n` says how many remain.
    """
    points = _levels(levels)
    j = np.asarray(judge, dtype=np.float64).ravel()
    h = np.asarray(human, dtype=np.float64).ravel()
    if j.shape != h.shape:
        raise ValueError(f"paired score arrays differ in length: {j.size} and {h.size}")
    x, y, yn = _side(j, h, human_numeric, ~(np.isnan(j) | np.isnan(h)))
    estimates = _metric_bundle(x, y, levels, y_numeric=yn)
    if x.size:
        weights = _resample_weights(x.size, None, n_resamples, seed)
        resampled = _resampled(weights, x, y, None if human_numeric is None else yn, points)
    else:
        _require_levels(points, x, y)
        resampled = {name: np.array([]) for name in Metrics.model_fields}
    cis = {}
    for name in Metrics.model_fields:
        estimate = float(getattr(estimates, name))
        reason = _undefined_reason(name, x, y) if math.isnan(estimate) else None
        cis[name] = _percentile_ci(estimate, resampled[name], confidence, reason)
    return PairAgreement(
        n=int(x.size),
        levels=points.tolist(),
        consensus=SCORE_AS_GIVEN if human_numeric is None else CONSENSUS_RULE,
        metrics=Metrics[CI](**cis),
        confusion=confusion(x, y, levels).tolist(),
    )


class PairedDelta(_Result):
    """One metric under two judges (e.g. two rubric wordings) on the same units, and B − A."""

    metric: str = Field(description="Metric name, as in Metrics.")
    a: float = Field(description="The metric for judge A.")
    b: float = Field(description="The metric for judge B.")
    delta: CI = Field(description="B − A with a paired bootstrap interval: each resample draws the same units.")


def paired_deltas(
    judge_a: npt.ArrayLike,
    judge_b: npt.ArrayLike,
    human: npt.ArrayLike,
    levels_a: Sequence[float],
    levels_b: Sequence[float],
    metrics: Sequence[str],
    *,
    human_numeric: npt.ArrayLike | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[int, list[PairedDelta]]:
    """The units where all three scores exist, and per metric A, B and B − A with a paired interval."""
    a = np.asarray(judge_a, dtype=np.float64).ravel()
    b = np.asarray(judge_b, dtype=np.float64).ravel()
    h = np.asarray(human, dtype=np.float64).ravel()
    if not a.shape == b.shape == h.shape:
        raise ValueError(f"score arrays differ in length: {a.size}, {b.size} and {h.size}")
    keep = ~(np.isnan(a) | np.isnan(b) | np.isnan(h))
    xa, y, yn = _side(a, h, human_numeric, keep)
    xb = b[keep]
    numeric = None if human_numeric is None else yn
    est_a, est_b = _metric_bundle(xa, y, levels_a, y_numeric=yn), _metric_bundle(xb, y, levels_b, y_numeric=yn)
    if xa.size:
        weights = _resample_weights(xa.size, None, n_resamples, seed)
        res_a = _resampled(weights, xa, y, numeric, _levels(levels_a))
        res_b = _resampled(weights, xb, y, numeric, _levels(levels_b))
    else:
        res_a = res_b = {name: np.array([]) for name in Metrics.model_fields}
    out = []
    for name in metrics:
        va, vb = float(getattr(est_a, name)), float(getattr(est_b, name))
        out.append(PairedDelta(metric=name, a=va, b=vb,
                               delta=_percentile_ci(vb - va, res_b[name] - res_a[name], confidence)))
    return int(xa.size), out


def icc_totals(judge_totals: npt.ArrayLike, human_totals: npt.ArrayLike) -> IccResult:
    """ICC of judge and human total scores per transcript, via pingouin.

    We report ICC(A,1) (Shrout & Fleiss ICC(2,1)): two-way random effects, absolute agreement, single
    rater. Absolute, because a judge that scores every chat 5 points lower is not interchangeable with
    the human even if it ranks chats the same (ICC(C,1) would forgive that); single, because in
    production one judge score stands alone.
    """
    x, y = _paired(judge_totals, human_totals)
    n = int(x.size)
    if n < 3:  # pingouin asserts on two units rather than returning NaN
        return IccResult(
            estimate=math.nan, low=math.nan, high=math.nan, n=n, reason="fewer than three paired totals"
        )
    if np.ptp(np.concatenate([x, y])) == 0:
        return IccResult(
            estimate=math.nan, low=math.nan, high=math.nan, n=n, reason="every total is the same: no variance"
        )
    import pandas as pd

    long = pd.DataFrame(
        {
            "unit": np.tile(np.arange(n), 2),
            "rater": np.repeat(["judge", "human"], n),
            "total": np.concatenate([x, y]),
        }
    )
    import pingouin  # imported here: it costs seconds at start-up and only ICC needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pingouin.intraclass_corr(data=long, targets="unit", raters="rater", ratings="total")
    row = table.set_index("Type").loc["ICC(A,1)"]
    low, high = (float(v) for v in row["CI95"])
    estimate = float(row["ICC"])
    reason = (
        "pingouin returned NaN: too little variation between transcripts" if math.isnan(estimate) else None
    )
    return IccResult(estimate=estimate, low=low, high=high, n=n, reason=reason)


# --- the human ceiling ------------------------------------------------------------------------


def _rater_ids(m: FloatArray, rater_ids: Sequence[str] | None) -> list[str]:
    ids = [str(j) for j in range(m.shape[1])] if rater_ids is None else list(rater_ids)
    if len(ids) != m.shape[1]:
        raise ValueError(f"{len(ids)} rater ids for {m.shape[1]} rater columns")
    return ids


def _summarise(
    method: Literal["pairwise", "rater vs consensus"], m: FloatArray, comparisons: list[RaterComparison],
    consensus: str | None = None,
) -> HumanAgreement:
    n_raters = int(np.sum(np.any(~np.isnan(m), axis=0)))
    means: dict[str, float] = {}
    for name in Metrics.model_fields:
        values = np.array([getattr(c.metrics, name) for c in comparisons], dtype=np.float64)
        values = np.abs(values) if name == "bias" else values
        means[name] = float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else math.nan
    reason = None if comparisons else "no two raters scored the same transcript"
    return HumanAgreement(
        method=method, consensus=consensus, n_raters=n_raters, mean=Metrics[float](**means),
        comparisons=comparisons, reason=reason,
    )


def pairwise_human_agreement(
    ratings: npt.ArrayLike, levels: Sequence[float], *, rater_ids: Sequence[str] | None = None
) -> HumanAgreement:
    """Every pair of raters compared on the units both scored, averaged over the pairs.

    `ratings` is units × raters with NaN for "not labelled". Pairs that share no unit are left out.
    """
    m = _matrix(ratings)
    _require_levels(_levels(levels), m[~np.isnan(m)])
    ids = _rater_ids(m, rater_ids)
    comparisons = []
    for r, s in combinations(range(m.shape[1]), 2):
        x, y = _paired(m[:, r], m[:, s])
        if x.size:
            comparisons.append(
                RaterComparison(
                    rater=ids[r], other=ids[s], n=int(x.size), metrics=_metric_bundle(x, y, levels)
                )
            )
    return _summarise("pairwise", m, comparisons)


def consensus_levels(ratings: npt.ArrayLike, levels: Sequence[float]) -> FloatArray:
    """Per unit, the median of the raters' levels (NaN where nobody scored), always itself a level.

    The median is taken over level indices and rounded down when it falls halfway between two levels
    (raters at 0 and 3 on levels 0/3/5 give 0; at 0 and 5 they give 3), so kappa-type metrics apply.
    Rounding down lowers the consensus on such units (by 0.05–0.08 points on average on DCH-1), which is
    why the point-based metrics, bias among them, use the raters' mean instead (`CONSENSUS_RULE`).
    """
    m = _matrix(ratings)
    points = _levels(levels)
    idx = np.full(m.shape, np.nan)
    present = ~np.isnan(m)
    idx[present] = _indices(m[present], points)
    out = np.full(m.shape[0], np.nan)
    scored = np.any(present, axis=1)
    if np.any(scored):
        out[scored] = points[np.floor(np.nanmedian(idx[scored], axis=1)).astype(np.int64)]
    return out


def rater_vs_consensus(
    ratings: npt.ArrayLike, levels: Sequence[float], *, rater_ids: Sequence[str] | None = None
) -> HumanAgreement:
    """Each rater against the consensus of the other raters, averaged over raters.

    The consensus is the median level of the others (`consensus_levels`) for the level-based
    metrics (exact, adjacent, both kappas, ordinal alpha), which need a level, and the mean of the
    others for the point-based ones (MAE, bias, Spearman, Kendall, interval alpha), which do not and
    lose less information that way. A unit counts for rater j when j and at least one other scored it.
    """
    m = _matrix(ratings)
    _require_levels(_levels(levels), m[~np.isnan(m)])
    ids = _rater_ids(m, rater_ids)
    comparisons = []
    for j in range(m.shape[1]):
        others = np.delete(m, j, axis=1)
        units = ~np.isnan(m[:, j]) & np.any(~np.isnan(others), axis=1)
        if not np.any(units):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # units without other scores are masked out below
            others_mean = np.nanmean(others, axis=1)
        metrics = _metric_bundle(
            m[units, j], consensus_levels(others[units], levels), levels, y_numeric=others_mean[units]
        )
        comparisons.append(
            RaterComparison(rater=ids[j], other="consensus", n=int(units.sum()), metrics=metrics)
        )
    return _summarise("rater vs consensus", m, comparisons, f"the other raters: {CONSENSUS_RULE}")


# --- the Alternative Annotator Test -----------------------------------------------------------


def _alignment(pred: FloatArray, others: FloatArray, how: Literal["neg_rmse", "accuracy"]) -> FloatArray:
    """Per unit, how well `pred` matches the other annotators' scores (higher is better; NaN = missing)."""
    present = ~np.isnan(others)
    count = present.sum(axis=1)
    if how == "accuracy":
        return np.asarray(np.sum((others == pred[:, None]) & present, axis=1) / count, dtype=np.float64)
    squared = np.where(present, (others - pred[:, None]) ** 2, 0.0)
    return np.asarray(-np.sqrt(squared.sum(axis=1) / count), dtype=np.float64)


def _one_sided_p(d: FloatArray, epsilon: float) -> float:
    """p of H0: mean(d) ≥ ε against H1: mean(d) < ε (d = human wins − judge wins per unit)."""
    if np.ptp(d) == 0:  # no variance: the sign of the gap is certain, the t statistic is ±inf
        return 0.0 if d[0] < epsilon else 1.0
    from scipy import stats

    return float(stats.ttest_1samp(d, popmean=epsilon, alternative="less").pvalue)


def alt_test(
    llm: npt.ArrayLike,
    ratings: npt.ArrayLike,
    *,
    rater_ids: Sequence[str] | None = None,
    epsilon: float = 0.2,
    q: float = 0.05,
    alignment: Literal["neg_rmse", "accuracy"] = "neg_rmse",
    min_units: int = 30,
) -> AltTestResult:
    """Whether the judge can replace a human annotator: the alt-test of Calderon, Reichart & Dror (ACL 2025).

    For each annotator j: on the units j, the judge and at least one other annotator scored, score the
    alignment of the judge and of j with the remaining annotators; W_f = [judge ≥ j], W_h = [j ≥ judge]
    (ties count for both). The judge wins against j when a one-sided paired t-test rejects
    H0: mean(W_f) ≤ mean(W_h) − ε, after Benjamini–Yekutieli correction at level q across annotators.
    ω is the share of annotators won, ρ the mean of mean(W_f); the judge passes when ω ≥ 0.5 and it
    ranks the chats like the annotators (`ALT_TEST_RULE`: per-chat alignment alone lets a constant pass).

    Alignment, as in the paper's reference code: "neg_rmse" = −√mean_k (s − h_k)² over the other
    annotators k (for scores on a scale, the default), "accuracy" = share of the others with the same
    score (for nominal labels). ε = 0.2 is the paper's suggestion for expert annotators. Annotators
    with fewer than `min_units` units are skipped (the paper recommends 50–100 units); the test needs
    at least three tested annotators to pass.
    """
    if min_units < 2:
        raise ValueError("min_units must be at least 2 for a t-test")
    m = _matrix(ratings)
    judge = np.asarray(llm, dtype=np.float64).ravel()
    if judge.size != m.shape[0]:
        raise ValueError(f"{judge.size} judge scores for {m.shape[0]} units")
    ids = _rater_ids(m, rater_ids)
    tested: list[tuple[str, int, float, float, float]] = []
    skipped: dict[str, str] = {}
    for j, rater in enumerate(ids):
        others = np.delete(m, j, axis=1)
        units = ~np.isnan(judge) & ~np.isnan(m[:, j]) & np.any(~np.isnan(others), axis=1)
        n_units = int(units.sum())
        if n_units < min_units:
            skipped[rater] = (
                f"{n_units} units shared with the judge and another annotator, fewer than {min_units}"
            )
            continue
        s_llm = _alignment(judge[units], others[units], alignment)
        s_human = _alignment(m[units, j], others[units], alignment)
        w_llm = (s_llm >= s_human).astype(np.float64)
        w_human = (s_human >= s_llm).astype(np.float64)
        p = _one_sided_p(w_human - w_llm, epsilon)
        tested.append((rater, n_units, float(w_llm.mean()), float(w_human.mean()), p))
    rho, rho_p = _discrimination(judge, m)
    if tested:
        from statsmodels.stats.multitest import multipletests

        won, adjusted, _, _ = multipletests([t[4] for t in tested], alpha=q, method="fdr_by")
    else:
        won, adjusted = np.array([], dtype=bool), np.array([])
    annotators = [
        AnnotatorTest(
            rater=rater,
            n_units=n_units,
            llm_advantage=adv_llm,
            human_advantage=adv_human,
            p_value=p,
            p_adjusted=float(p_adj),
            won=bool(w),
        )
        for (rater, n_units, adv_llm, adv_human, p), p_adj, w in zip(tested, adjusted, won, strict=True)
    ]
    omega = float(np.mean(won)) if annotators else math.nan
    advantage = float(np.mean([a.llm_advantage for a in annotators])) if annotators else math.nan
    enough = len(annotators) >= 3
    ranks = rho_p < q
    reason = None
    if not enough:
        reason = f"needs at least 3 annotators with {min_units}+ units; {len(annotators)} had"
    elif not ranks:
        reason = f"the judge does not rank the chats like the annotators (Spearman {rho:.2f}, p {rho_p:.3f})"
    return AltTestResult(
        alignment=alignment,
        epsilon=epsilon,
        q=q,
        annotators=annotators,
        skipped=skipped,
        winning_rate=omega,
        advantage_probability=advantage,
        discrimination=rho,
        discrimination_p=rho_p,
        passed=enough and ranks and omega >= 0.5,
        reason=reason,
    )


def _discrimination(judge: FloatArray, m: FloatArray) -> tuple[float, float]:
    """Spearman of the judge with the annotators' mean, and its one-sided p against "no better than 0"."""
    scored = ~np.isnan(judge) & np.any(~np.isnan(m), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m[scored], axis=1)
    x = judge[scored]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(mean) == 0:
        return math.nan, 1.0
    from scipy import stats

    result = stats.spearmanr(x, mean, alternative="greater")
    return float(result.statistic), float(result.pvalue)


# --- verdict ----------------------------------------------------------------------------------


def verdict(weighted_kappa: CI, thresholds: VerdictThresholds = DEFAULT_THRESHOLDS) -> Verdict:
    """Trusted, review or not trusted, from the weighted kappa and its interval.

    An undefined kappa (NaN, e.g. every score the same) cannot be judged from numbers, so it is "review".
    """
    if (
        weighted_kappa.estimate >= thresholds.trusted_estimate
        and weighted_kappa.low >= thresholds.trusted_low
    ):
        return "trusted"
    if weighted_kappa.estimate < thresholds.not_trusted_below:
        return "not trusted"
    return "review"
