"""Differences in points between two score arrays: mean absolute error and mean bias."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from pipeline.agreement.confusions import Confusions
from pipeline.agreement.levels import FloatArray, paired


def mean_absolute_error(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Mean |a − b| in points."""
    x, y = paired(a, b)
    return float(np.mean(np.abs(x - y))) if x.size else math.nan


def mean_bias(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Mean (a − b) in points: positive when a (the judge) scores higher than b (the human)."""
    x, y = paired(a, b)
    return float(np.mean(x - y)) if x.size else math.nan


def resampled_mae(r: Confusions) -> FloatArray:
    """`mean_absolute_error` on every resample."""
    return np.asarray((r.c * np.abs(r.diff)).sum(axis=(1, 2)) / r.n, dtype=np.float64)


def resampled_bias(r: Confusions) -> FloatArray:
    """`mean_bias` on every resample."""
    return np.asarray((r.c * r.diff).sum(axis=(1, 2)) / r.n, dtype=np.float64)
