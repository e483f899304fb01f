"""Exports for people: scores.csv (a row per transcript × repeat), grades.jsonl, checks.jsonl, and xlsx/parquet/csv.

Everything streams from the store, so a million-grade run exports in constant memory (xlsx, which
Excel caps at 1,048,576 rows, is the exception and says so). Unscored criteria are empty cells,
never 0; a subtotal or total that depends on an unscored criterion is empty too. Criterion, group,
dimension and total columns hold the FINAL scores: the rubric's caps and critical items applied to
the LLM's scores with the transcript's stored checks (pipeline/adjustments.py); `llm_total` and
grades.jsonl's `llm_score` keep the LLM's own. Check columns follow the score columns; a check
that could not be measured (no timestamps) is an empty cell beside its reason, never 0.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal, TextIO

from pipeline import adjustments
from pipeline.adjustments import AdjustedScores, apply_hooks
from pipeline.checks import CHECKS
from pipeline.errors import KefuError
from pipeline.grader import Grade
from pipeline.rubric import Rubric
from pipeline.store import Store
from pipeline.timing import ColumnValue

ExportFormat = Literal["csv", "xlsx", "parquet"]
XLSX_MAX_ROWS = 1_048_575


@dataclass(frozen=True)
class ScoreRow:
    """One transcript × repeat with every criterion's LLM points (None when unscored) and its stored metadata."""

    transcript_id: str
    repeat: int
    scores: dict[str, int | None]
    model: str
    status: str
    meta: dict[str, Any] | None = None
    grades: tuple[Grade, ...] = ()

    @property
    def check_columns(self) -> dict[str, ColumnValue] | None:
        """The transcript's flat check columns, or None when no checks were stored for it."""
        record = self.meta.get("checks") if self.meta else None
        return record["columns"] if record else None

    def adjusted(self, rubric: Rubric) -> AdjustedScores:
        """The final scores under the rubric's hooks."""
        return apply_hooks(rubric, self.scores, self.check_columns)


def score_columns(rubric: Rubric) -> list[str]:
    """The scores.csv header: a contract (see README)."""
    cols = ["transcript_id", "repeat"]
    cols += [c.id for c in rubric.criteria()]
    cols += [g.id for d in rubric.dimensions for g in d.groups]
    cols += [d.id for d in rubric.dimensions]
    return [*cols, "total", "max_total", "model", "status", "llm_total", "critical_failed", "adjustments", *CHECKS]


def iter_score_rows(store: Store, rubric: Rubric) -> Iterator[ScoreRow]:
    """Grades folded into one row per transcript × repeat (per-criterion calls merged), with the
    transcript's metadata joined in (both streams are in transcript-id order)."""
    metas = store.iter_transcript_meta()
    meta = next(metas, None)
    for (tid, repeat), group in groupby(
        store.iter_grades(rubric_hash=rubric.content_hash), key=lambda g: (g.transcript_id, g.repeat)
    ):
        while meta is not None and meta["id"] < tid:
            meta = next(metas, None)
        grades = tuple(group)
        scores: dict[str, int | None] = {c.id: None for c in rubric.criteria()}
        for grade in grades:
            for cg in grade.criteria:
                scores[cg.criterion_id] = cg.score
        missing = sum(v is None for v in scores.values())
        status = "scored" if missing == 0 else ("unscored" if missing == len(scores) else "partial")
        own_meta = meta if meta is not None and meta["id"] == tid else None
        yield ScoreRow(tid, repeat, scores, grades[0].model, status, own_meta, grades)


def row_values(row: ScoreRow, rubric: Rubric, adjusted: AdjustedScores | None = None) -> dict[str, Any]:
    """A ScoreRow with final criterion scores, group, dimension and total sums and the checks, keyed by
    score_columns(); pass `adjusted` when the caller has already applied the rubric's hooks."""
    adjusted = adjusted if adjusted is not None else row.adjusted(rubric)
    out: dict[str, Any] = {"transcript_id": row.transcript_id, "repeat": row.repeat, **adjusted.scores}
    dim_totals: list[int | None] = []
    for d in rubric.dimensions:
        group_totals = []
        for g in d.groups:
            out[g.id] = _sum([adjusted.scores[c.id] for c in g.criteria])
            group_totals.append(out[g.id])
        out[d.id] = _sum(group_totals)
        dim_totals.append(out[d.id])
    out["total"] = 0 if adjusted.critical_failed else _sum(dim_totals)
    out["max_total"] = rubric.total
    out["model"] = row.model
    out["status"] = row.status
    out["llm_total"] = _sum(list(row.scores.values()))
    out["critical_failed"] = adjusted.critical_failed
    out["adjustments"] = adjusted.describe()
    out.update(dict.fromkeys(CHECKS) | (row.check_columns or {}))
    return out


def _sum(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def grade_lines(grade: Grade, adjusted: AdjustedScores) -> Iterator[dict[str, Any]]:
    """grades.jsonl lines for one stored call: one per criterion, with the call's bookkeeping nested.

    `llm_score` is the model's score, `score` the final one, `adjustment` what changed it.
    """
    call = {
        "key": grade.key, "scope": grade.scope, "status": grade.status, "attempts": grade.attempts,
        "prompt_tokens": grade.prompt_tokens, "cached_tokens": grade.cached_tokens,
        "completion_tokens": grade.completion_tokens, "response_mode": grade.response_mode,
        "latency_s": grade.latency_s, "error": grade.error, "created_at": grade.created_at.isoformat(),
    }
    for cg in grade.criteria:
        yield {
            "transcript_id": grade.transcript_id,
            "repeat": grade.repeat,
            "criterion_id": cg.criterion_id,
            "status": "scored" if cg.score is not None else "unscored",
            "llm_score": cg.score,
            "score": adjusted.scores.get(cg.criterion_id),
            "adjustment": adjusted.describe(cg.criterion_id),
            "critical_failed": adjusted.critical_failed,
            "reasoning": cg.reasoning,
            "evidence": [e.model_dump() for e in cg.evidence],
            "quotes_verified": all(e.verified for e in cg.evidence),
            "model": grade.model,
            "call": call,
        }


def iter_grade_lines(store: Store, rubric: Rubric) -> Iterator[dict[str, Any]]:
    """Every grades.jsonl line, in transcript, repeat and scope order."""
    for row in iter_score_rows(store, rubric):
        adjusted = row.adjusted(rubric)
        for grade in row.grades:
            yield from grade_lines(grade, adjusted)


def write_outputs(store: Store, rubric: Rubric, out_dir: Path) -> tuple[Path, Path]:
    """Write OUT/scores.csv and OUT/grades.jsonl from the store (the run's contract files)."""
    _write_scores_and_grades(store, rubric, out_dir)
    return out_dir / "scores.csv", out_dir / "grades.jsonl"


@dataclass(frozen=True)
class Outputs:
    """The run folder's contract files and the means the run summary prints."""

    scores_csv: Path
    grades_jsonl: Path
    checks_jsonl: Path
    dimension_means: dict[str, float | None]
    written: bool
    """False when the files were already up to date and were left alone."""


_EXPORT_STAMP = "exports"
_CODE = hashlib.sha256(b"".join(Path(m).read_bytes() for m in (__file__, adjustments.__file__))).hexdigest()


def refresh_outputs(store: Store, rubric: Rubric, out_dir: Path) -> Outputs:
    """Write scores.csv, grades.jsonl and checks.jsonl, unless nothing they show has changed since last time.

    A resume that grades nothing would otherwise rewrite every file (hundreds of MB for 10^5 chats).
    The files are up to date when they all exist and the store's change counter, the rubric (hooks
    included: they change final scores) and this module's code are what they were when they were
    written; the means come back from that time.
    """
    paths = (out_dir / "scores.csv", out_dir / "grades.jsonl", out_dir / "checks.jsonl")
    rubric_dump = json.dumps(rubric.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    stamp = {"changes": store.changes(), "rubric": hashlib.sha256(rubric_dump.encode()).hexdigest(), "code": _CODE}
    kept = store.meta_value(_EXPORT_STAMP)
    if kept is not None and all(p.exists() for p in paths):
        previous = json.loads(kept)
        if previous["stamp"] == stamp:
            return Outputs(*paths, previous["means"], written=False)
    means = _write_scores_and_grades(store, rubric, out_dir)
    write_checks(store, out_dir)
    store.set_meta_value(_EXPORT_STAMP, json.dumps({"stamp": stamp, "means": means}))
    return Outputs(*paths, means, written=True)


def _write_scores_and_grades(store: Store, rubric: Rubric, out_dir: Path) -> dict[str, float | None]:
    """One pass over the store for both files; returns the mean final points per dimension and for the
    total over fully scored rows."""
    sums: dict[str, float] = {d.id: 0.0 for d in rubric.dimensions} | {"total": 0.0}
    scored = 0

    def score_lines(grades: TextIO) -> Iterator[dict[str, Any]]:
        nonlocal scored
        for row in iter_score_rows(store, rubric):
            adjusted = row.adjusted(rubric)
            values = row_values(row, rubric, adjusted)
            for grade in row.grades:
                for line in grade_lines(grade, adjusted):
                    grades.write(json.dumps(line, ensure_ascii=False) + "\n")
            if row.status == "scored":
                scored += 1
                for k in sums:
                    sums[k] += values[k]
            yield values

    with (out_dir / "grades.jsonl").open("w", encoding="utf-8") as grades_fh:
        _write_csv(out_dir / "scores.csv", score_columns(rubric), score_lines(grades_fh))
    return {k: (round(v / scored, 2) if scored else None) for k, v in sums.items()}


def write_checks(store: Store, out_dir: Path) -> Path:
    """Write OUT/checks.jsonl: one line per transcript with its metadata and its checks (null if none)."""
    path = out_dir / "checks.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for meta in store.iter_transcript_meta():
            line = {"transcript_id": meta["id"], **{k: meta[k] for k in _META_FIELDS}, "checks": meta["checks"]}
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")
    return path


_META_FIELDS = ("platform", "shop", "agent_id", "started_at", "n_turns", "source")


def _write_csv(path: Path, columns: list[str], rows: Iterator[dict[str, Any]]) -> None:
    # utf-8-sig so that Excel on Windows opens Chinese text correctly.
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})


def _flat_grade_rows(store: Store, rubric: Rubric) -> Iterator[dict[str, Any]]:
    for line in iter_grade_lines(store, rubric):
        call = line.pop("call")
        line["evidence"] = json.dumps(line["evidence"], ensure_ascii=False)
        yield {**line, **{f"call_{k}": v for k, v in call.items()}}


def export_run(store: Store, rubric: Rubric, fmt: ExportFormat, dest: Path) -> list[Path]:
    """Export scores and per-criterion grades as csv, xlsx or parquet files under `dest`."""
    import pandas as pd  # imported here: pandas costs half a second and only exports need it

    dest.mkdir(parents=True, exist_ok=True)
    columns = score_columns(rubric)
    if fmt == "csv":
        scores = dest / "scores.csv"
        grades = dest / "grades.csv"
        _write_csv(scores, columns, (row_values(r, rubric) for r in iter_score_rows(store, rubric)))
        rows = _flat_grade_rows(store, rubric)
        first = next(rows, None)
        with grades.open("w", encoding="utf-8-sig", newline="") as fh:
            if first is not None:
                writer = csv.DictWriter(fh, fieldnames=list(first))
                writer.writeheader()
                writer.writerow(first)
                writer.writerows(rows)
        return [scores, grades]
    score_frame = pd.DataFrame(
        [row_values(r, rubric) for r in iter_score_rows(store, rubric)], columns=columns
    )
    grade_frame = pd.DataFrame(list(_flat_grade_rows(store, rubric)))
    if fmt == "parquet":
        paths = [dest / "scores.parquet", dest / "grades.parquet"]
        score_frame.to_parquet(paths[0], index=False)
        grade_frame.to_parquet(paths[1], index=False)
        return paths
    if len(score_frame) > XLSX_MAX_ROWS or len(grade_frame) > XLSX_MAX_ROWS:
        raise KefuError(f"too many rows for one Excel sheet ({XLSX_MAX_ROWS:,}); export parquet or csv instead")
    path = dest / "scores.xlsx"
    with pd.ExcelWriter(path, engine="openpyxl") as book:
        score_frame.to_excel(book, sheet_name="scores", index=False)
        grade_frame.to_excel(book, sheet_name="grades", index=False)
    return [path]
