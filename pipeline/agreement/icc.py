"""The intraclass correlation of judge and human total scores per transcript, via pingouin."""

from __future__ import annotations

import math
import warnings

import numpy as np
import numpy.typing as npt

from pipeline.agreement.levels import paired
from pipeline.agreement.reasons import reason
from pipeline.agreement.results import IccResult


def icc_totals(judge_totals: npt.ArrayLike, human_totals: npt.ArrayLike) -> IccResult:
    """ICC of judge and human total scores per transcript, via pingouin.

    We report ICC(A,1) (Shrout & Fleiss ICC(2,1)): two-way random effects, absolute agreement, single
    rater. Absolute, because a judge that scores every chat 5 points lower is not interchangeable with
    the human even if it ranks chats the same (ICC(C,1) would forgive that); single, because in
    production one judge score stands alone.
    """
    x, y = paired(judge_totals, human_totals)
    n = int(x.size)
    if n < 3:  # pingouin asserts on two units rather than returning NaN
        return IccResult(
            estimate=math.nan, low=math.nan, high=math.nan, n=n, reason=reason("icc_few")
        )
    if np.ptp(np.concatenate([x, y])) == 0:
        return IccResult(
            estimate=math.nan, low=math.nan, high=math.nan, n=n, reason=reason("icc_constant")
        )
    import pandas as pd

    long = pd.DataFrame(
        {
            "unit": np.tile(np.arange(n), 2),
            "rater": np.repeat(["judge", "human"], n),
            "total": np.concatenate([x, y]),
        }
    )
    import pingouin  # imported here: it costs seconds at start-up and only ICC needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = pingouin.intraclass_corr(data=long, targets="unit", raters="rater", ratings="total")
    row = table.set_index("Type").loc["ICC(A,1)"]
    low, high = (float(v) for v in row["CI95"])
    estimate = float(row["ICC"])
    why = reason("icc_nan") if math.isnan(estimate) else None
    return IccResult(estimate=estimate, low=low, high=high, n=n, reason=why)
