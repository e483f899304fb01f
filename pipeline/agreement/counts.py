"""Agreement counted on levels: the exact and adjacent shares and the confusion matrix."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from pipeline.agreement.confusions import Confusions
from pipeline.agreement.levels import FloatArray, IntArray, level_indices, level_points, paired, require_levels


def exact_agreement(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Share of units where both sides gave the same score."""
    x, y = paired(a, b)
    return float(np.mean(x == y)) if x.size else math.nan


def adjacent_agreement(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float]) -> float:
    """Share of units whose levels differ by at most one level (not one point)."""
    points = level_points(levels)
    x, y = paired(a, b)
    if not x.size:
        return math.nan
    return float(np.mean(np.abs(level_indices(x, points) - level_indices(y, points)) <= 1))


def confusion(a: npt.ArrayLike, b: npt.ArrayLike, levels: Sequence[float]) -> IntArray:
    """Counts of (a's level, b's level); rows follow a, columns b, both in level order."""
    points = level_points(levels)
    x, y = paired(a, b)
    require_levels(points, x, y)
    if not x.size:
        return np.zeros((points.size, points.size), dtype=np.int64)
    from sklearn.metrics import confusion_matrix

    return np.asarray(confusion_matrix(x, y, labels=points), dtype=np.int64)


def resampled_exact(r: Confusions) -> FloatArray:
    """`exact_agreement` on every resample: the diagonal's share."""
    return np.asarray(np.trace(r.c, axis1=1, axis2=2) / r.n, dtype=np.float64)


def resampled_adjacent(r: Confusions) -> FloatArray:
    """`adjacent_agreement` on every resample: the share at most one level off the diagonal."""
    return np.asarray((r.c * (np.abs(r.gap) <= 1)).sum(axis=(1, 2)) / r.n, dtype=np.float64)
