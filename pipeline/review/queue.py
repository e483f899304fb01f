"""Labelling queues: which chats a reviewer labels, drawn reproducibly from a run.

A queue is its parameters (mode, size, seed, stratum), not stored rows: the same parameters draw the
same chats in the same order on any machine, so several reviewers given one queue link label the
same set independently (calibration). Modes:

- `random`: a seeded uniform sample of the run's chats;
- `stratified`: the same number from each agent (or shop, or day), then shuffled, so that small
  groups are represented;
- `disagree`: the chats whose repeats disagree on some criterion's score, where the judge is least sure,
  in a seeded random order.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

QueueMode = Literal["random", "stratified", "disagree"]


class QueueSpec(BaseModel):
    """A queue's parameters, from the page's query string."""

    model_config = ConfigDict(extra="ignore")

    mode: QueueMode = Field(default="random", description="How the chats are drawn.")
    n: int = Field(default=20, ge=1, le=1000, description="How many chats.")
    seed: int = Field(default=1, description="The draw's seed.")
    by: Literal["agent", "shop", "day", "platform"] = Field(default="agent", description="Stratum for 'stratified'.")


def draw_queue(frame: pd.DataFrame, spec: QueueSpec) -> list[str]:
    """The queue's transcript ids, in labelling order."""
    rng = np.random.default_rng(spec.seed)
    chats = frame.drop_duplicates("transcript_id").sort_values("transcript_id")
    if spec.mode == "disagree":
        scores = frame[[c for c in frame.columns if c.startswith("c:")]]
        spread = scores.groupby(frame["transcript_id"]).nunique(dropna=True).max(axis=1)
        ids = sorted(spread[spread > 1].index)
        return [ids[i] for i in rng.permutation(len(ids))[: spec.n]]
    ids = chats["transcript_id"].tolist()
    if spec.mode == "random" or not len(chats):
        return [ids[i] for i in rng.permutation(len(ids))[: spec.n]]
    groups = [part["transcript_id"].tolist() for _, part in chats.groupby(chats[spec.by].fillna(""), sort=True)]
    per_group = max(1, spec.n // len(groups))
    drawn = [g[i] for g in groups for i in rng.permutation(len(g))[:per_group]]
    return [drawn[i] for i in rng.permutation(len(drawn))[: spec.n]]
