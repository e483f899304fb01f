"""Judge versus human on one criterion: every metric of the table with its bootstrap interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pipeline.agreement.bootstrap import percentile_ci, resample_weights, resampled_metrics
from pipeline.agreement.counts import confusion
from pipeline.agreement.levels import FloatArray, IntArray, level_indices, level_points, require_levels
from pipeline.agreement.reasons import reason
from pipeline.agreement.results import CI, CONSENSUS_RULE, SCORE_AS_GIVEN, Metrics, PairAgreement, PairedDelta
from pipeline.agreement.table import METRICS, MetricSpec, metric_bundle


def _undefined_reason(metric: MetricSpec, x: FloatArray, y: FloatArray) -> str:
    if x.size == 0:
        return reason("no_pairs")
    if x.size == 1 and not metric.defined_for_one:
        return reason("one_pair")
    if metric.ranks:
        judge, human = np.ptp(x) == 0, np.ptp(y) == 0
        return reason("both_constant" if judge and human else "judge_constant" if judge else "human_constant")
    return reason("one_level")


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
    resampled = resampled_metrics(weights, level_indices(x, points), level_indices(y, points), points)
    if yn is not None:  # the same resamples over the values both sides take
        domain = np.unique(np.concatenate([points, yn]))
        numeric = resampled_metrics(weights, np.searchsorted(domain, x), np.searchsorted(domain, yn), domain)
        resampled |= {m.name: numeric[m.name] for m in METRICS if m.point_based}
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
    points = level_points(levels)
    j = np.asarray(judge, dtype=np.float64).ravel()
    h = np.asarray(human, dtype=np.float64).ravel()
    if j.shape != h.shape:
        raise ValueError(f"paired score arrays differ in length: {j.size} and {h.size}")
    x, y, yn = _side(j, h, human_numeric, ~(np.isnan(j) | np.isnan(h)))
    estimates = metric_bundle(x, y, levels, y_numeric=yn)
    if x.size:
        weights = resample_weights(x.size, None, n_resamples, seed)
        resampled = _resampled(weights, x, y, None if human_numeric is None else yn, points)
    else:
        require_levels(points, x, y)
        resampled = {m.name: np.array([]) for m in METRICS}
    cis = {}
    for m in METRICS:
        estimate = float(getattr(estimates, m.name))
        reason = _undefined_reason(m, x, y) if math.isnan(estimate) else None
        cis[m.name] = percentile_ci(estimate, resampled[m.name], confidence, reason)
    return PairAgreement(
        n=int(x.size),
        levels=points.tolist(),
        consensus=SCORE_AS_GIVEN if human_numeric is None else CONSENSUS_RULE,
        metrics=Metrics[CI](**cis),
        confusion=confusion(x, y, levels).tolist(),
    )


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
    est_a, est_b = metric_bundle(xa, y, levels_a, y_numeric=yn), metric_bundle(xb, y, levels_b, y_numeric=yn)
    if xa.size:
        weights = resample_weights(xa.size, None, n_resamples, seed)
        res_a = _resampled(weights, xa, y, numeric, level_points(levels_a))
        res_b = _resampled(weights, xb, y, numeric, level_points(levels_b))
    else:
        res_a = res_b = {m.name: np.array([]) for m in METRICS}
    out = []
    for name in metrics:
        va, vb = float(getattr(est_a, name)), float(getattr(est_b, name))
        out.append(PairedDelta(metric=name, a=va, b=vb,
                               delta=percentile_ci(vb - va, res_b[name] - res_a[name], confidence)))
    return int(xa.size), out

