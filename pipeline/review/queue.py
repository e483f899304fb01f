"""Labelling queues: which chats a reviewer labels, drawn reproducibly from a run.

A queue is its parameters (mode, size, seed, stratum), not stored rows: the same parameters draw the
same chats in the same order on any machine, so several reviewers given one queue link label the
same set independently (calibration). Modes:

- `random`: a seeded uniform sample of the run's chats;
- `stratified`: the same number from each agent (or shop, or day), then shuffled, so that small
  groups are represented;
- `disagree`: the chats whose repeats disagree on some criterion's score, where the judge is least sure,
  in a seeded random order;
- `unverified`: the chats with an evidence quote that failed verification (not in the cited turn, said
  by the other side, or in a turn that addresses the grader), in a seeded random order;
- `low_agreement`: for the criteria a check found least reliable (`low_agreement`), the chats flagged
  needs_review first, then the same number of chats at each of those criteria's final levels (the
  first repeat's), taken in turn, so that every level the judge gives gets a human label.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import zip_longest
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

QueueMode = Literal["random", "stratified", "disagree", "unverified", "low_agreement"]


class QueueSpec(BaseModel):
    """A queue's parameters, from the page's query string."""

    model_config = ConfigDict(extra="ignore")

    mode: QueueMode = Field(default="random", description="How the chats are drawn.")
    n: int = Field(default=20, ge=1, le=1000, description="How many chats.")
    seed: int = Field(default=1, description="The draw's seed.")
    by: Literal["agent", "shop", "day", "platform"] = Field(default="agent", description="Stratum for 'stratified'.")
    criteria: str = Field(default="", description="For 'low_agreement': criterion ids, comma-separated; empty: "
                          "those below 'trusted' in an agreement.json beside the run.")

    def given_criteria(self) -> list[str]:
        """The criterion ids the person named."""
        return [c.strip() for c in self.criteria.split(",") if c.strip()]


def draw_queue(frame: pd.DataFrame, spec: QueueSpec, focus: Sequence[str] = ()) -> list[str]:
    """The queue's transcript ids, in labelling order; `focus` is the low-agreement criteria."""
    rng = np.random.default_rng(spec.seed)
    chats = frame.sort_values(["transcript_id", "repeat"]).drop_duplicates("transcript_id")
    if spec.mode == "disagree":
        scores = frame[[c for c in frame.columns if c.startswith("c:")]]
        spread = scores.groupby(frame["transcript_id"]).nunique(dropna=True).max(axis=1)
        return _shuffled(sorted(spread[spread > 1].index), rng)[: spec.n]
    if spec.mode == "unverified":
        counts = frame.groupby("transcript_id")["unverified"].sum()
        return _shuffled(sorted(counts[counts > 0].index), rng)[: spec.n]
    if spec.mode == "low_agreement":
        return _low_agreement(chats, focus, rng)[: spec.n]
    ids = chats["transcript_id"].tolist()
    if spec.mode == "random" or not len(chats):
        return _shuffled(ids, rng)[: spec.n]
    groups = [part["transcript_id"].tolist() for _, part in chats.groupby(chats[spec.by].fillna(""), sort=True)]
    per_group = max(1, spec.n // len(groups))
    drawn = [g[i] for g in groups for i in rng.permutation(len(g))[:per_group]]
    return [drawn[i] for i in rng.permutation(len(drawn))[: spec.n]]


def _shuffled(ids: list[str], rng: np.random.Generator) -> list[str]:
    return [ids[i] for i in rng.permutation(len(ids))]


def _low_agreement(chats: pd.DataFrame, focus: Sequence[str], rng: np.random.Generator) -> list[str]:
    """needs_review chats, then one chat per (criterion, level) bucket in turn until every bucket is used up."""
    if not focus:
        return []
    flagged = chats["needs_review"].astype(bool)
    first = _shuffled(chats.loc[flagged, "transcript_id"].tolist(), rng)
    others = chats[~flagged]
    buckets = [_shuffled(part["transcript_id"].tolist(), rng) for c in focus
               for _, part in others.groupby(others[f"c:{c}"], sort=True)]
    drawn = dict.fromkeys(first)
    for turn in zip_longest(*buckets):
        drawn.update(dict.fromkeys(t for t in turn if t is not None))
    return list(drawn)
