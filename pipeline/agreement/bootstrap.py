"""Percentile bootstrap intervals over resampled units (transcripts).

`bootstrap_ci` calls any metric function once per resample. `compare_scores` instead recomputes every
metric of the table from resampled confusion matrices in numpy (`resampled_metrics`): the libraries cost
0.4-2.6 ms a call, which for 11 criteria × 10 metrics × 1,000 resamples is minutes, while every paired
metric is a function of the level × level confusion matrix. Tests pin the two against each other on
identical resamples.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from pipeline.agreement.confusions import resampled_confusions
from pipeline.agreement.levels import FloatArray, IntArray
from pipeline.agreement.reasons import reason
from pipeline.agreement.results import CI
from pipeline.agreement.table import METRICS


def resample_weights(n_rows: int, unit_index: npt.ArrayLike | None, n_resamples: int, seed: int) -> IntArray:
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


def percentile_ci(estimate: float, values: FloatArray, confidence: float, reason: str | None = None) -> CI:
    """The interval of the defined (finite) resampled values around `estimate`; NaN ends if none."""
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
        return percentile_ci(math.nan, np.array([]), confidence, reason=reason("no_data"))
    estimate = float(metric_fn(*columns))
    rows = np.arange(n_rows)
    weights = resample_weights(n_rows, unit_index, n_resamples, seed)
    values = np.array(
        [metric_fn(*(c[np.repeat(rows, w)] for c in columns)) for w in weights], dtype=np.float64
    )
    return percentile_ci(estimate, values, confidence)


def resampled_metrics(
    weights: IntArray, xi: IntArray, yi: IntArray, points: FloatArray
) -> dict[str, FloatArray]:
    """Every metric of the table on every resample at once, from the resampled confusion matrices.

    The formulas are the textbook ones the libraries implement (sklearn's kappa, Krippendorff's
    coincidence-matrix alpha, Spearman as Pearson on mid-ranks, Kendall's tau-b from a contingency
    table); tests check them against the libraries on identical resamples.
    """
    r = resampled_confusions(weights, xi, yi, points)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = {m.name: m.resampled(r) for m in METRICS}
    return {
        m.name: np.where(np.isfinite(out[m.name]) & ((r.n >= 2) | m.defined_for_one), out[m.name], np.nan)
        for m in METRICS
    }
