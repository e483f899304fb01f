"""The overview: one table of every chat × repeat's final scores and facets, filtered and summed in memory.

The table is the run's figures (`pipeline.outputs.figures`: the store's flat figures, kept by trigger
as grades and checks are written, parsed column-wise, with the rubric's caps and critical items applied
over whole columns and the reviewers' decisions on the chats they concern), read again whenever the
store's change counter or its resolved disputes move, so it is never stale and needs no cache file.
The per-group table is `kefu summary`'s (`summarize_figures`) over the filtered rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipeline.rubric.model import Rubric

GROUPS = {"agent": "客服", "shop": "店铺", "day": "日期", "platform": "平台"}
STATUS_NAMES = {"scored": "已评分", "partial": "部分评分", "unscored": "未评分"}


class Filters(BaseModel):
    """The overview's filters, from the page's query string; empty means no filter."""

    model_config = ConfigDict(extra="ignore")

    agent: str = Field(default="", description="Agent id.")
    shop: str = Field(default="", description="Shop.")
    platform: str = Field(default="", description="Platform.")
    day: str = Field(default="", description="ISO date.")
    status: str = Field(default="", description="scored, partial or unscored.")
    min_total: int | None = Field(default=None, description="Lowest final total.")
    max_total: int | None = Field(default=None, description="Highest final total.")
    critical: str = Field(default="", description="'1': failed by a critical item only; '0': not failed.")
    criterion: str = Field(default="", description="With `score`: chats whose criterion has that final score.")
    score: int | None = Field(default=None, description="A final score of `criterion`.")


def apply_filters(frame: pd.DataFrame, f: Filters) -> pd.DataFrame:
    """The rows that pass every filter given."""
    keep = np.ones(len(frame), dtype=bool)
    for name in ("agent", "shop", "platform", "day", "status"):
        value = getattr(f, name)
        if value:
            keep &= (frame[name] == value).to_numpy()
    if f.min_total is not None:
        keep &= (frame["total"] >= f.min_total).to_numpy()
    if f.max_total is not None:
        keep &= (frame["total"] <= f.max_total).to_numpy()
    if f.critical in ("0", "1"):
        keep &= (frame["critical"] == (f.critical == "1")).to_numpy()
    if f.criterion and f"c:{f.criterion}" in frame and f.score is not None:
        keep &= (frame[f"c:{f.criterion}"] == f.score).to_numpy()
    return frame[keep]


@dataclass
class Totals:
    chats: int
    rows: int
    by_status: dict[str, int]
    critical: int
    mean_total: float | None


def totals(frame: pd.DataFrame) -> Totals:
    """Chats, rows, rows per status, critical failures and the mean final total."""
    counts = frame["status"].value_counts()
    mean = frame["total"].mean()
    return Totals(int(frame["transcript_id"].nunique()), len(frame),
                  {s: int(counts.get(s, 0)) for s in STATUS_NAMES}, int(frame["critical"].sum()),
                  None if pd.isna(mean) else round(float(mean), 2))


@dataclass
class Distribution:
    criterion_id: str
    name: str
    counts: list[tuple[int, int]]
    """(level points, rows at that final score), ascending points."""
    unscored: int


def distributions(frame: pd.DataFrame, rubric: Rubric) -> list[Distribution]:
    """Each criterion's final scores counted by level."""
    out = []
    for c in rubric.criteria():
        counts = frame[f"c:{c.id}"].value_counts()
        out.append(Distribution(c.id, c.name, [(p, int(counts.get(p, 0))) for p in c.points],
                                int(frame[f"c:{c.id}"].isna().sum())))
    return out


def facet_values(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter can take, for the page's drop-downs."""
    return {name: sorted(str(v) for v in frame[name].dropna().unique()) for name in GROUPS}
