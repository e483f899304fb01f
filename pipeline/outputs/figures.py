"""A run's figures as two tables: one row per transcript × repeat (LLM and final scores), one per transcript (checks).

They are read from the store's flat figures, kept by trigger (`grades.scores` as JSON lines, the
transcripts' as CSV lines: `pipeline/store/transcript_figures.py`), parsed column-wise by Arrow, and
the rubric's caps and critical items are applied over whole columns (`pipeline/rubric/final_frame.py`),
so a 100,000-chat run is read in about a second without decoding a grade's reasoning or a transcript's
per-message checks. Reviewers' decisions are applied afterwards to the chats they concern
(`with_decisions`). The review overview and `kefu summary` both read a run this way.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

from pipeline.models.checks import CHECKS, CheckKind, ColumnValue
from pipeline.rubric.final_frame import final_frame
from pipeline.rubric.hooks import Decision, apply_hooks
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store
from pipeline.store.transcript_figures import FIGURE_COLUMNS

_KIND_TYPES = {CheckKind.number: pa.float64(), CheckKind.flag: pa.bool_(), CheckKind.reason: pa.string(),
               CheckKind.choice: pa.string()}
_TRANSCRIPT_TYPES = {"transcript_id": pa.string(), "platform": pa.string(), "shop": pa.string(),
                     "stored_agent": pa.string(), "has_checks": pa.bool_()} | {
    c.name: _KIND_TYPES[c.kind] for c in FIGURE_COLUMNS}


@dataclass(frozen=True)
class RunFigures:
    """The run's rows (transcript × repeat) with their transcript's figures joined in."""

    rows: pd.DataFrame
    """transcript_id, repeat, status, unverified (quotes that failed verification), needs_review (a field
    addresses the grader), `llm:<criterion>` and `c:<criterion>` (final) scores, critical, total, then the
    transcript's platform, shop, agent, day (as the summary groups them), has_checks and every check column."""


def _parse(lines: bytes, schema: pa.Schema) -> pd.DataFrame:
    """JSON lines as a frame with the schema's columns (fields absent from a line are null), parsed by Arrow."""
    if not lines:
        empty: pd.DataFrame = schema.empty_table().flatten().to_pandas()
        return empty
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    table = pa_json.read_json(io.BytesIO(lines), parse_options=options).flatten()
    frame: pd.DataFrame = table.to_pandas()
    return frame


def read_transcript_figures(store: Store) -> pd.DataFrame:
    """One row per stored transcript: transcript_id, platform, shop, stored_agent, has_checks and the
    check columns and counts (`FIGURE_COLUMNS`). An empty unquoted CSV field is null, a quoted one a text."""
    lines = store.transcript_figures()
    names = list(_TRANSCRIPT_TYPES)
    if not lines:
        empty: pd.DataFrame = pa.schema(list(_TRANSCRIPT_TYPES.items())).empty_table().to_pandas()
        return empty
    table = pa_csv.read_csv(
        io.BytesIO(lines), read_options=pa_csv.ReadOptions(column_names=names),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),  # ids and names may hold newlines
        convert_options=pa_csv.ConvertOptions(
            column_types=_TRANSCRIPT_TYPES, null_values=[""], true_values=["true"], false_values=["false"],
            strings_can_be_null=True, quoted_strings_can_be_null=False))
    frame: pd.DataFrame = table.to_pandas()
    return frame


def read_figures(store: Store, rubric: Rubric) -> RunFigures:
    """Every row of the run under `rubric`, its LLM and final scores (without decisions) and its chat's figures."""
    ids = [c.id for c in rubric.criteria()]
    calls = _parse(store.grade_figures(rubric_hash=rubric.content_hash), pa.schema([
        ("transcript_id", pa.string()), ("repeat", pa.int64()), ("unverified", pa.int64()),
        ("needs_review", pa.bool_()), ("scores", pa.struct([(c, pa.float64()) for c in ids]))]))
    calls = calls.rename(columns={f"scores.{c}": f"llm:{c}" for c in ids})
    if calls.duplicated(["transcript_id", "repeat"]).any():  # per-criterion calls: one row of them all
        calls = calls.groupby(["transcript_id", "repeat"], sort=False, as_index=False).agg(
            {"unverified": "sum", "needs_review": "any", **{f"llm:{c}": "last" for c in ids}})
    missing = calls[[f"llm:{c}" for c in ids]].isna().sum(axis=1).to_numpy()
    calls["status"] = np.where(missing == 0, "scored", np.where(missing == len(ids), "unscored", "partial"))

    transcripts = read_transcript_figures(store)
    known = transcripts["agent"].notna() & (transcripts["agent"] != "")  # as the summary's `or`: empty is unknown
    transcripts["agent"] = transcripts["agent"].where(known, transcripts["stored_agent"])
    rows = calls.merge(transcripts.drop(columns="stored_agent"), on="transcript_id", how="left", sort=False)
    rows["has_checks"] = rows["has_checks"].fillna(False).astype(bool)

    final = final_frame(rubric, rows[[f"llm:{c}" for c in ids]].set_axis(ids, axis=1), rows)
    for c in ids:
        rows[f"c:{c}"] = final.scores[c].to_numpy()
    rows["critical"] = final.critical
    rows["total"] = final.total
    return RunFigures(rows)


def with_decisions(figures: RunFigures, rubric: Rubric,
                   decisions: Mapping[str, Mapping[str, Decision]]) -> RunFigures:
    """The rows with the reviewers' decisions applied (through `apply_hooks`) to the chats they concern."""
    if not decisions:
        return figures
    rows = figures.rows.copy()
    ids = [c.id for c in rubric.criteria()]
    check_names = [n for n in CHECKS if n in rows]
    finals = [f"c:{c}" for c in ids]
    for label in rows.index[rows["transcript_id"].isin(list(decisions)).to_numpy()]:
        row = rows.loc[label]
        llm = {c: None if pd.isna(row[f"llm:{c}"]) else int(row[f"llm:{c}"]) for c in ids}
        checks = {n: _cell(row[n]) for n in check_names} if row["has_checks"] else None
        adjusted = apply_hooks(rubric, llm, checks, decisions[str(row["transcript_id"])])
        scores = [adjusted.scores[c] for c in ids]
        total = 0.0 if adjusted.critical_failed else np.nan if None in scores else float(sum(f or 0 for f in scores))
        rows.loc[label, [*finals, "critical", "total"]] = [
            *(np.nan if f is None else float(f) for f in scores), adjusted.critical_failed, total]
    return RunFigures(rows)


def _cell(value: Any) -> ColumnValue:
    """A frame cell as the check column value `apply_hooks` reads: None when missing, numpy scalars as Python's."""
    if value is None or pd.isna(value):
        return None
    return value.item() if isinstance(value, np.generic) else value  # type: ignore[no-any-return]
