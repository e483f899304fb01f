"""Krippendorff's alpha over a units × raters matrix, ordinal or interval."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import krippendorff
import numpy as np
import numpy.typing as npt

from pipeline.agreement.confusions import Confusions
from pipeline.agreement.levels import FloatArray, level_points, ratings_matrix, require_levels


def unchecked_alpha(units_by_raters: FloatArray, level: Literal["nominal", "ordinal", "interval"]) -> float:
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
    m = ratings_matrix(ratings)
    require_levels(level_points(levels), m[~np.isnan(m)])
    return unchecked_alpha(m, level)


def _resampled_alpha(r: Confusions, delta2: FloatArray) -> FloatArray:
    """Krippendorff's coincidence-matrix alpha of two raters on every resample."""
    coincidences = r.c + r.c.transpose(0, 2, 1)
    n_v = r.rows + r.cols
    d2 = np.broadcast_to(delta2, r.c.shape)
    expected = np.einsum("bi,bij,bj->b", n_v, d2, n_v)
    return np.asarray(1 - (2 * r.n - 1) * (coincidences * d2).sum(axis=(1, 2)) / expected, dtype=np.float64)


def resampled_alpha_ordinal(r: Confusions) -> FloatArray:
    """Ordinal alpha of the two sides on every resample."""
    # δ_ck = Σ_{g=c..k} n_g − (n_c + n_k)/2 for c ≤ k; m is antisymmetric, so m² is δ² everywhere.
    n_v = r.rows + r.cols
    cum = np.cumsum(n_v, axis=1)
    m = cum[:, None, :] - cum[:, :, None] + (n_v[:, :, None] - n_v[:, None, :]) / 2
    return _resampled_alpha(r, np.asarray(m**2, dtype=np.float64))


def resampled_alpha_interval(r: Confusions) -> FloatArray:
    """Interval alpha of the two sides on every resample."""
    return _resampled_alpha(r, r.diff**2)
