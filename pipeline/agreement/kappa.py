"""Cohen's kappa, unweighted and quadratic-weighted over level order."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pipeline.agreement.confusions import Confusions
from pipeline.agreement.levels import FloatArray, level_points, paired, require_levels


def _sklearn_kappa(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float], weights: str | None) -> float:
    points = level_points(levels)
    x, y = paired(a, b)
    require_levels(points, x, y)
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


def _resampled_kappa(r: Confusions, w: FloatArray) -> FloatArray:
    """sklearn's formula: 1 − observed weighted disagreement / expected, on every resample."""
    expected = np.einsum("bi,ij,bj->b", r.rows, w, r.cols) / r.n
    return np.asarray(1 - (r.c * w).sum(axis=(1, 2)) / expected, dtype=np.float64)


def resampled_cohen_kappa(r: Confusions) -> FloatArray:
    """`cohen_kappa` on every resample."""
    return _resampled_kappa(r, (r.gap != 0).astype(np.float64))


def resampled_weighted_kappa(r: Confusions) -> FloatArray:
    """`weighted_kappa` on every resample."""
    return _resampled_kappa(r, r.gap**2)
