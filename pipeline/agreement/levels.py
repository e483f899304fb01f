"""Input checks shared by the agreement statistics: level points, paired scores, rating matrices."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def level_points(levels: Sequence[float]) -> FloatArray:
    """The levels as an array; ValueError unless at least two ascending distinct finite points."""
    points = np.asarray(levels, dtype=np.float64)
    if points.ndim != 1 or points.size < 2 or not np.all(np.isfinite(points)) or np.any(np.diff(points) <= 0):
        raise ValueError(f"levels must be at least two ascending distinct points, got {list(levels)}")
    return points


def level_indices(scores: FloatArray, points: FloatArray) -> IntArray:
    """Level index of each (non-missing) score; ValueError naming any score that is not a level."""
    idx = np.clip(np.searchsorted(points, scores), 0, points.size - 1)
    bad = scores[points[idx] != scores]
    if bad.size:
        raise ValueError(f"scores {sorted(set(bad.tolist()))} are not among the levels {points.tolist()}")
    return idx.astype(np.int64)


def require_levels(points: FloatArray, *scores: FloatArray) -> None:
    """ValueError unless every score is one of the levels."""
    for s in scores:
        level_indices(s, points)


def paired(a: npt.ArrayLike, b: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Both score arrays restricted to the units where both sides have a score."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired score arrays differ in length: {x.size} and {y.size}")
    both = ~(np.isnan(x) | np.isnan(y))
    return x[both], y[both]


def ratings_matrix(ratings: npt.ArrayLike) -> FloatArray:
    """The ratings as a units × raters float matrix; ValueError for any other shape."""
    m = np.asarray(ratings, dtype=np.float64)
    if m.ndim != 2:
        raise ValueError(f"ratings must be a units × raters matrix, got shape {m.shape}")
    return m


def rater_columns(m: FloatArray, rater_ids: Sequence[str] | None) -> list[str]:
    """One id per rater column: the given ones, or the column numbers."""
    ids = [str(j) for j in range(m.shape[1])] if rater_ids is None else list(rater_ids)
    if len(ids) != m.shape[1]:
        raise ValueError(f"{len(ids)} rater ids for {m.shape[1]} rater columns")
    return ids
