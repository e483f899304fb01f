"""The metric table: one entry per field of `Metrics`, each resampled form equal to its scalar form."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.agreement.confusions import resampled_confusions
from pipeline.agreement.levels import level_indices
from pipeline.agreement.results import Metrics
from pipeline.agreement.table import METRICS, MetricSpec


def test_the_table_names_every_field_of_the_result_model_in_order() -> None:
    assert [m.name for m in METRICS] == list(Metrics.model_fields)


@pytest.mark.parametrize("spec", METRICS, ids=[m.name for m in METRICS])
def test_each_resampled_form_on_the_data_as_given_is_the_scalar_form(spec: MetricSpec) -> None:
    # One "resample" that draws every unit once is the data itself, so both forms must agree.
    # Levels 0/3/5 (uneven) tell level order from points: adjacent and the kappas use the order.
    levels = [0.0, 3.0, 5.0]
    x = np.array([0, 0, 3, 3, 5, 5, 0, 5], dtype=np.float64)
    y = np.array([0, 3, 3, 5, 5, 5, 3, 0], dtype=np.float64)
    points = np.asarray(levels)
    r = resampled_confusions(np.ones((1, x.size), dtype=np.int64), level_indices(x, points),
                             level_indices(y, points), points)
    assert spec.resampled(r)[0] == pytest.approx(spec.scalar(x, y, levels))
