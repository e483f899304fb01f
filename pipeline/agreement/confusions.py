"""Resampled level × level confusion matrices: what every metric's resampled form reads.

Every paired metric here is a function of the confusion matrix of the two sides' levels, so the
bootstrap draws its resamples as weights on the units, forms one confusion matrix per resample, and
each metric computes all resamples at once from them (see `bootstrap`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from pipeline.agreement.levels import FloatArray, IntArray


class Confusions(NamedTuple):
    """One confusion matrix per resample with its margins, and the level distances."""

    c: FloatArray
    """Counts per resample: resamples × levels × levels, rows the first side, columns the second."""
    n: FloatArray
    """Units in each resample."""
    rows: FloatArray
    """Row margins: resamples × levels."""
    cols: FloatArray
    """Column margins: resamples × levels."""
    gap: FloatArray
    """Levels apart, by level order: levels × levels."""
    diff: FloatArray
    """Points apart, row level minus column level: levels × levels."""


def resampled_confusions(weights: IntArray, xi: IntArray, yi: IntArray, points: FloatArray) -> Confusions:
    """The confusion matrices of level indices `xi` against `yi` under each row of `weights`."""
    k = points.size
    onehot = np.zeros((xi.size, k * k))
    onehot[np.arange(xi.size), xi * k + yi] = 1.0
    c = (weights @ onehot).reshape(-1, k, k)
    order = np.arange(k)
    return Confusions(
        c=c,
        n=c.sum(axis=(1, 2)),
        rows=c.sum(axis=2),
        cols=c.sum(axis=1),
        gap=(order[:, None] - order[None, :]).astype(np.float64),
        diff=points[:, None] - points[None, :],
    )
