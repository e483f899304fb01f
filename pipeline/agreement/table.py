"""The table of paired agreement metrics: each metric once, with its scalar and its resampled form.

Adding a metric is one `MetricSpec` here, its two functions in the module of its family, and its field
in `results.Metrics` (pydantic needs the field named so that code and templates can read it, typed).
The bundle below, the bootstrap (`bootstrap.resampled_metrics`) and `compare.compare_scores` iterate
this table; tests/agreement/test_agreement_table.py checks it against `Metrics` and each resampled form against
its scalar form, tests/agreement/test_agreement.py the bootstrap against the libraries on identical resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from pipeline.agreement.alpha import (
    krippendorff_alpha,
    resampled_alpha_interval,
    resampled_alpha_ordinal,
    unchecked_alpha,
)
from pipeline.agreement.confusions import Confusions
from pipeline.agreement.correlation import kendall, resampled_kendall, resampled_spearman, spearman
from pipeline.agreement.counts import adjacent_agreement, exact_agreement, resampled_adjacent, resampled_exact
from pipeline.agreement.differences import mean_absolute_error, mean_bias, resampled_bias, resampled_mae
from pipeline.agreement.kappa import cohen_kappa, resampled_cohen_kappa, resampled_weighted_kappa, weighted_kappa
from pipeline.agreement.levels import FloatArray
from pipeline.agreement.results import Metrics


class MetricSpec(NamedTuple):
    """One paired metric: how to compute it once, and on every bootstrap resample."""

    name: str
    """Its field in `results.Metrics`."""
    scalar: Callable[[FloatArray, FloatArray, Sequence[float]], float]
    """The metric of x against y (levels, or points when `point_based`) on the criterion's levels."""
    resampled: Callable[[Confusions], FloatArray]
    """The same metric on every resample, from the resampled confusion matrices."""
    point_based: bool
    """Uses the points themselves, so a numeric human side (the raters' mean) replaces the levels."""
    defined_for_one: bool
    """Defined on a single unit (the others need two)."""
    ranks: bool = False
    """A rank correlation: undefined when either side is constant."""


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("exact", lambda x, y, levels: exact_agreement(x, y), resampled_exact, False, True),
    MetricSpec("adjacent", adjacent_agreement, resampled_adjacent, False, True),
    MetricSpec("kappa", cohen_kappa, resampled_cohen_kappa, False, False),
    MetricSpec("weighted_kappa", weighted_kappa, resampled_weighted_kappa, False, False),
    MetricSpec(
        "alpha_ordinal",
        lambda x, y, levels: krippendorff_alpha(np.column_stack([x, y]), levels, "ordinal"),
        resampled_alpha_ordinal, False, False,
    ),
    MetricSpec(
        "alpha_interval",
        lambda x, y, levels: unchecked_alpha(np.column_stack([x, y]), "interval"),
        resampled_alpha_interval, True, False,
    ),
    MetricSpec("spearman", lambda x, y, levels: spearman(x, y), resampled_spearman, True, False, ranks=True),
    MetricSpec("kendall", lambda x, y, levels: kendall(x, y), resampled_kendall, True, False, ranks=True),
    MetricSpec("mae", lambda x, y, levels: mean_absolute_error(x, y), resampled_mae, True, True),
    MetricSpec("bias", lambda x, y, levels: mean_bias(x, y), resampled_bias, True, True),
)
"""Every paired metric, in the order of `results.Metrics`."""


def metric_bundle(
    x: FloatArray, y: FloatArray, levels: Sequence[float], y_numeric: FloatArray | None = None
) -> Metrics[float]:
    """All metrics of x against y; `y_numeric` (same units) replaces y for the point-based metrics."""
    yn = y if y_numeric is None else y_numeric
    return Metrics[float](**{m.name: m.scalar(x, yn if m.point_based else y, levels) for m in METRICS})
