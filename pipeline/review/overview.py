"""The overview: one table of every chat × repeat's final scores and facets, filtered and summed in memory.

The table is built from the store (scores and check columns extracted by SQLite, so no grade's
reasoning or evidence is decoded), kept beside the store as OUT/review_index.parquet and rebuilt only
when the store's change counter (grades, transcripts), the rubric or this code changed: a 100,000-chat
run builds it once, in a background thread when the app starts, and later starts read it back.
Final scores are the exports': the rubric's caps and critical items applied
(`adjustments.apply_hooks`), then the reviewers' decisions, re-applied to the few chats they concern
whenever they change. Rates per group are the check columns'
means over the chats where they were measured: 2分钟首次回复率 (`first_reply_within_limit`),
the reply-limit share weighted by customer messages, and the share of chats with a banned phrase.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import groupby
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from pipeline.outputs.exports import stored_check_columns
from pipeline.rubric import hooks as adjustments
from pipeline.rubric.hooks import AdjustedScores, Decision, apply_hooks
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

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


CACHE_FILE = "review_index.parquet"
_CACHE_STAMP = "review_index"
_CODE = hashlib.sha256(b"".join(Path(m).read_bytes() for m in (__file__, adjustments.__file__))).hexdigest()


def load_index(store: Store, rubric: Rubric, folder: Path) -> pd.DataFrame:
    """The table without the reviewers' decisions: read back from the cache file when current, else built and kept."""
    stamp = json.dumps({"changes": store.changes(), "rubric": rubric.content_hash, "code": _CODE})
    path = folder / CACHE_FILE
    if store.meta_value(_CACHE_STAMP) == stamp and path.is_file():
        return pd.read_parquet(path)
    frame = build_index(store, rubric)
    partial = path.with_suffix(".partial")
    frame.to_parquet(partial, index=False)
    partial.replace(path)
    store.set_meta_value(_CACHE_STAMP, stamp)
    return frame


def _cells(rubric: Rubric, adjusted: AdjustedScores) -> tuple[Any, ...]:
    """status, total, critical failure and each criterion's final score."""
    finals = [adjusted.scores[c.id] for c in rubric.criteria()]
    missing = finals.count(None)
    status = "scored" if missing == 0 else "unscored" if missing == len(finals) else "partial"
    total = 0 if adjusted.critical_failed else (None if missing else sum(f or 0 for f in finals))
    return (status, total, adjusted.critical_failed, *finals)


def build_index(store: Store, rubric: Rubric) -> pd.DataFrame:
    """One row per transcript × repeat: facets, check rates, the LLM's and the final criterion scores, total,
    the quotes that failed verification and whether the chat addresses the grader (needs_review)."""
    criterion_ids = [c.id for c in rubric.criteria()]
    facets = store.iter_transcript_facets()
    facet = next(facets, None)
    records: list[tuple[Any, ...]] = []
    for (tid, repeat), group in groupby(store.iter_score_cells(rubric_hash=rubric.content_hash),
                                        key=itemgetter(0, 1)):
        while facet is not None and facet[0] < tid:
            facet = next(facets, None)
        own = facet if facet is not None and facet[0] == tid else (tid, None, None, None, None, None)
        llm: dict[str, int | None] = dict.fromkeys(criterion_ids)
        unverified = needs_review = 0
        for cell in group:
            llm.update((cid, score) for cid, score in json.loads(cell[3]))
            unverified += cell[4]
            needs_review |= cell[5]
        columns = json.loads(own[5]) if own[5] else None
        c = columns or {}
        records.append((tid, repeat, *own[1:5], *_cells(rubric, apply_hooks(rubric, llm, columns)),
                        c.get("first_reply_within_limit"), c.get("share_within_reply_limit"),
                        c.get("customer_messages"), (c.get("banned_hits") or 0) > 0 if columns else None,
                        unverified, bool(needs_review), *llm.values()))
    frame = pd.DataFrame.from_records(records, columns=_names(criterion_ids))
    numeric = ["total", "reply_share", "customer_messages", *(f"{p}:{c}" for p in ("c", "llm") for c in criterion_ids)]
    for name in numeric:
        frame[name] = pd.to_numeric(frame[name], errors="coerce")
    return frame


def _names(criterion_ids: list[str]) -> list[str]:
    return ["transcript_id", "repeat", "platform", "shop", "agent", "day", "status", "total", "critical",
            *(f"c:{c}" for c in criterion_ids), "first_reply_ok", "reply_share", "customer_messages", "banned",
            "unverified", "needs_review", *(f"llm:{c}" for c in criterion_ids)]


def apply_decisions(frame: pd.DataFrame, store: Store, rubric: Rubric,
                    decisions: Mapping[str, Mapping[str, Decision]]) -> pd.DataFrame:
    """The table with the reviewers' decisions applied to the rows of the chats they concern."""
    if not decisions:
        return frame
    out = frame.copy()
    criterion_ids = [c.id for c in rubric.criteria()]
    targets = ["status", "total", "critical", *(f"c:{c}" for c in criterion_ids)]
    for tid, decided in decisions.items():
        rows = out.index[out["transcript_id"] == tid]
        meta = store.transcript_row(tid) if len(rows) else None
        columns = stored_check_columns(meta.checks) if meta is not None else None
        for i in rows:
            cells = out.loc[i, [f"llm:{c}" for c in criterion_ids]].to_numpy(dtype=float)
            llm = {c: None if np.isnan(v) else int(v) for c, v in zip(criterion_ids, cells, strict=True)}
            out.loc[i, targets] = list(_cells(rubric, apply_hooks(rubric, llm, columns, decided)))
    return out


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


@dataclass
class GroupRow:
    group: str | None
    chats: int
    mean_total: float | None
    critical: int
    first_reply_rate: float | None
    reply_rate: float | None
    banned_rate: float | None


def group_table(frame: pd.DataFrame, by: str) -> list[GroupRow]:
    """Per agent, shop, day or platform: chats, mean final total, critical failures and the service rates."""
    rows = []
    for key, part in frame.groupby(frame[by].fillna("\0"), sort=True):
        first = part.drop_duplicates("transcript_id")  # rates once per chat whatever its repeats
        fr = first["first_reply_ok"].dropna()
        weights = first["customer_messages"].where(first["reply_share"].notna()).fillna(0)
        banned = first["banned"].dropna()
        rows.append(GroupRow(
            None if key == "\0" else str(key), int(first.shape[0]), _mean(part["total"]), int(part["critical"].sum()),
            float(fr.astype(bool).mean()) if len(fr) else None,
            float((first["reply_share"].fillna(0) * weights).sum() / weights.sum()) if weights.sum() else None,
            float(banned.astype(bool).mean()) if len(banned) else None,
        ))
    return rows


def _mean(values: pd.Series) -> float | None:
    mean = values.mean()
    return None if pd.isna(mean) else round(float(mean), 2)


def facet_values(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter can take, for the page's drop-downs."""
    return {name: sorted(str(v) for v in frame[name].dropna().unique()) for name in GROUPS}
