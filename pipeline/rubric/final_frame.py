"""Final scores of many chats at once: `hooks.apply_hooks` over columns, for the overview and the summary.

The same rules in the same order as `apply_hooks` (caps in file order, each lowering its criterion
when the current score is higher; then critical items, a criterion's on the LLM's own score), with
each condition's `mask` in place of its `holds`. Reviewers' decisions are not applied here: they
concern few chats, which `apply_hooks` finishes one by one. tests/rubric/test_final_frame.py holds the
two to the same results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from pipeline.rubric.conditions import CriticalScore
from pipeline.rubric.model import Rubric


@dataclass(frozen=True)
class FinalFrame:
    """Per row: every criterion's final score (NaN when unscored), whether a critical item failed it, its total."""

    scores: pd.DataFrame
    """One column per criterion id, in rubric order."""
    critical: NDArray[np.bool_]
    total: NDArray[np.float64]
    """0 when failed by a critical item, NaN when a criterion is unscored, else the sum."""


def final_frame(rubric: Rubric, llm: pd.DataFrame, checks: pd.DataFrame) -> FinalFrame:
    """Final scores of rows whose LLM scores are `llm` (a column per criterion id, NaN when unscored) and whose
    chats' check columns are the same rows of `checks` (a chat without checks: every cell missing)."""
    ids = [c.id for c in rubric.criteria()]
    own = llm.reindex(columns=ids).astype(float)
    scores = own.copy()
    for cap in rubric.caps:
        current = scores[cap.criterion].to_numpy()
        lowered = (current > cap.cap) & cap.when.mask(checks)  # NaN > cap is False: an unscored one stays
        scores.loc[lowered, cap.criterion] = float(cap.cap)
    critical = np.zeros(len(own), dtype=bool)
    for item in rubric.critical:
        if isinstance(item, CriticalScore):
            critical |= own[item.criterion].to_numpy() <= item.at_or_below
        else:
            critical |= item.when.mask(checks)
    values = scores.to_numpy()
    total = np.where(critical, 0.0, values.sum(axis=1))  # a NaN in the row makes the sum NaN
    return FinalFrame(scores, critical, total)
