"""Rank correlations of two score arrays: Spearman's rho and Kendall's tau-b."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.agreement.confusions import Confusions
from pipeline.agreement.levels import FloatArray, paired


def _correlation(fn: Callable[..., Any], a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    x, y = paired(a, b)
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


def resampled_spearman(r: Confusions) -> FloatArray:
    """`spearman` on every resample: Pearson on the mid-ranks of the confusion margins."""
    rows, cols, n = r.rows, r.cols, r.n
    mid = (n[:, None] + 1) / 2
    rx = np.cumsum(rows, axis=1) - rows + (rows + 1) / 2 - mid
    ry = np.cumsum(cols, axis=1) - cols + (cols + 1) / 2 - mid
    cov = np.einsum("bij,bi,bj->b", r.c, rx, ry)
    return np.asarray(
        cov / np.sqrt((rows * rx**2).sum(axis=1) * (cols * ry**2).sum(axis=1)), dtype=np.float64
    )


def resampled_kendall(r: Confusions) -> FloatArray:
    """`kendall` on every resample: tau-b from the confusion matrix as a contingency table."""
    c, rows, cols, n = r.c, r.rows, r.cols, r.n
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
