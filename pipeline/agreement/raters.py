"""The human ceiling: how far raters agree among themselves, pairwise or each against the others' consensus."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from itertools import combinations
from typing import Literal

import numpy as np
import numpy.typing as npt

from pipeline.agreement.levels import (
    FloatArray,
    level_indices,
    level_points,
    paired,
    rater_columns,
    ratings_matrix,
    require_levels,
)
from pipeline.agreement.reasons import reason
from pipeline.agreement.results import CONSENSUS_RULE, HumanAgreement, Metrics, RaterComparison
from pipeline.agreement.table import METRICS, metric_bundle


def _summarise(
    method: Literal["pairwise", "rater vs consensus"], m: FloatArray, comparisons: list[RaterComparison],
    consensus: str | None = None,
) -> HumanAgreement:
    n_raters = int(np.sum(np.any(~np.isnan(m), axis=0)))
    means: dict[str, float] = {}
    for name in (spec.name for spec in METRICS):
        values = np.array([getattr(c.metrics, name) for c in comparisons], dtype=np.float64)
        values = np.abs(values) if name == "bias" else values
        means[name] = float(np.mean(values[~np.isnan(values)])) if np.any(~np.isnan(values)) else math.nan
    return HumanAgreement(
        method=method, consensus=consensus, n_raters=n_raters, mean=Metrics[float](**means),
        comparisons=comparisons, reason=None if comparisons else reason("no_overlap"),
    )


def pairwise_human_agreement(
    ratings: npt.ArrayLike, levels: Sequence[float], *, rater_ids: Sequence[str] | None = None
) -> HumanAgreement:
    """Every pair of raters compared on the units both scored, averaged over the pairs.

    `ratings` is units × raters with NaN for "not labelled". Pairs that share no unit are left out.
    """
    m = ratings_matrix(ratings)
    require_levels(level_points(levels), m[~np.isnan(m)])
    ids = rater_columns(m, rater_ids)
    comparisons = []
    for r, s in combinations(range(m.shape[1]), 2):
        x, y = paired(m[:, r], m[:, s])
        if x.size:
            comparisons.append(
                RaterComparison(
                    rater=ids[r], other=ids[s], n=int(x.size), metrics=metric_bundle(x, y, levels)
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
    m = ratings_matrix(ratings)
    points = level_points(levels)
    idx = np.full(m.shape, np.nan)
    present = ~np.isnan(m)
    idx[present] = level_indices(m[present], points)
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
    m = ratings_matrix(ratings)
    require_levels(level_points(levels), m[~np.isnan(m)])
    ids = rater_columns(m, rater_ids)
    comparisons = []
    for j in range(m.shape[1]):
        others = np.delete(m, j, axis=1)
        units = ~np.isnan(m[:, j]) & np.any(~np.isnan(others), axis=1)
        if not np.any(units):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # units without other scores are masked out below
            others_mean = np.nanmean(others, axis=1)
        metrics = metric_bundle(
            m[units, j], consensus_levels(others[units], levels), levels, y_numeric=others_mean[units]
        )
        comparisons.append(
            RaterComparison(rater=ids[j], other="consensus", n=int(units.sum()), metrics=metrics)
        )
    return _summarise("rater vs consensus", m, comparisons, f"the other raters: {CONSENSUS_RULE}")
