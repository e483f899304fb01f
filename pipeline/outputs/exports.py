"""Exports for people: scores.csv (a row per transcript × repeat), grades.jsonl, checks.jsonl, and xlsx/parquet/csv.

Everything but parquet streams from the store, so a million-grade run exports in constant memory
(the xlsx book is pipeline/outputs/spreadsheet.py, which continues a sheet past Excel's 1,048,576 rows).
Unscored criteria are empty cells, never 0; a subtotal or total that depends on an unscored
criterion is empty too. Criterion, group, dimension and total columns hold the FINAL scores: the
rubric's caps and critical items applied to the LLM's scores with the transcript's stored checks
(pipeline/rubric/hooks.py); `llm_total` and grades.jsonl's `llm_score` keep the LLM's own. A
resolved dispute (`kefu review`) is final: its score replaces the criterion's, for every repeat of
the chat, and the adjustment names who decided and why. Check columns follow the score columns; a
check that could not be measured (no timestamps) is an empty cell beside its reason, never 0.

The contract files are written from the stored rows without validating them into models: criteria
are decoded with json.loads, grades.jsonl lines are assembled from JSON fragments, and checks.jsonl
splices the stored checks text. Each writes exactly what `json.dumps(..., ensure_ascii=False)` of
the model-based line would, with U+0085, U+2028 and U+2029 escaped (`pipeline.jsonlines`), so a reader
that splits at every Unicode line boundary still reads one line per record
(tests/outputs/test_exports_fast.py compares them byte for byte), for a quarter
to a third of the CPU per row (bench/exports_speed.py). `iter_score_rows` and `row_values` stay
model-based for the summary and the consistency checks, which read whole check records.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter, itemgetter
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO

from pipeline.jsonlines import escape_separators
from pipeline.models.checks import CHECKS, ColumnValue
from pipeline.models.grade import Grade
from pipeline.outputs.cells import csv_cells
from pipeline.outputs.provenance import JudgeProvenance, judge_of_run, write_judge_file
from pipeline.rubric import hooks as adjustments
from pipeline.rubric.hooks import AdjustedScores, Decision, apply_hooks
from pipeline.rubric.model import Rubric
from pipeline.store.rows import DisputeRow, GradeRow
from pipeline.store.store import Store

ExportFormat = Literal["csv", "xlsx", "parquet"]

_ENCODE = json.JSONEncoder(ensure_ascii=False).encode
"""`json.dumps(value, ensure_ascii=False)` without its per-call set-up (a str goes straight to the C escaper)."""


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
    decisions: dict[str, Decision] | None = None
    """Reviewers' final scores by criterion id (resolved disputes), if any."""

    @property
    def injection(self) -> list[dict[str, Any]]:
        """The prompt-injection hits of the row's calls (`Grade.injection`), each once."""
        return _unique_hits(hit.model_dump() for grade in self.grades for hit in grade.injection)

    @property
    def check_columns(self) -> dict[str, ColumnValue] | None:
        """The transcript's flat check columns, or None when no checks were stored for it."""
        record = self.meta.get("checks") if self.meta else None
        return record["columns"] if record else None

    def adjusted(self, rubric: Rubric) -> AdjustedScores:
        """The final scores under the rubric's hooks."""
        return apply_hooks(rubric, self.scores, self.check_columns, self.decisions)


def score_columns(rubric: Rubric) -> list[str]:
    """The scores.csv header: a contract (see README)."""
    cols = ["transcript_id", "repeat"]
    cols += [c.id for c in rubric.criteria()]
    cols += [g.id for d in rubric.dimensions for g in d.groups]
    cols += [d.id for d in rubric.dimensions]
    return [*cols, "total", "max_total", "model", "status", "llm_total", "critical_failed", "adjustments",
            "adjustment_ids", *INJECTION_COLUMNS, *CHECKS]


INJECTION_COLUMNS = ("needs_review", "injection_suspected")
"""scores.csv's review columns: True when a field of the chat addresses the grader, and where (checks/injection.py)."""
_FIELD_NAMES = {"shop": "店铺", "platform": "平台"}


def _unique_hits(hits: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for hit in hits:
        seen.setdefault(tuple(hit.values()), hit)
    return list(seen.values())


def _injection_cell(hits: list[dict[str, Any]]) -> str | None:
    """`第8轮 ignore_rules; 店铺 fake_system`: where each hit is and which pattern found it."""
    places = [f"第{h['turn']}轮" if h["field"] == "turn" else _FIELD_NAMES[h["field"]] for h in hits]
    return "; ".join(f"{place} {h['pattern']}" for place, h in zip(places, hits, strict=True)) or None


def iter_score_rows(store: Store, rubric: Rubric) -> Iterator[ScoreRow]:
    """Grades folded into one row per transcript × repeat (per-criterion calls merged), with the
    transcript's metadata joined in (both streams are in transcript-id order)."""
    metas = store.iter_transcript_meta()
    meta = next(metas, None)
    decisions = load_decisions(store)
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
        own_meta = meta if meta is not None and meta["id"] == tid else None
        yield ScoreRow(tid, repeat, scores, grades[0].model, _row_status(scores), own_meta, grades,
                       decisions.get(tid))


def load_decisions(store: Store) -> dict[str, dict[str, Decision]]:
    """Every chat's resolved disputes as final scores by criterion (few: they are held in memory)."""
    return {tid: {cid: as_decision(row) for cid, row in rows.items()} for tid, rows in store.decisions().items()}


def as_decision(row: DisputeRow) -> Decision:
    """A resolved dispute as the decision `apply_hooks` applies."""
    assert row.final_score is not None, "only a resolved dispute decides"
    return Decision(row.final_score, f"{row.resolved_by}: {row.note or row.reason}")


def _row_status(scores: Mapping[str, int | None]) -> str:
    missing = sum(v is None for v in scores.values())
    return "scored" if missing == 0 else ("unscored" if missing == len(scores) else "partial")


def row_values(row: ScoreRow, rubric: Rubric, adjusted: AdjustedScores | None = None) -> dict[str, Any]:
    """A ScoreRow with final criterion scores, group, dimension and total sums and the checks, keyed by
    score_columns(); pass `adjusted` when the caller has already applied the rubric's hooks."""
    adjusted = adjusted if adjusted is not None else row.adjusted(rubric)
    return _final_values(rubric, adjusted, row.transcript_id, row.repeat, row.model, row.status, row.check_columns,
                         row.injection)


def _final_values(rubric: Rubric, adjusted: AdjustedScores, transcript_id: str, repeat: int, model: str,
                  status: str, check_columns: dict[str, ColumnValue] | None,
                  injection: list[dict[str, Any]]) -> dict[str, Any]:
    """`row_values` from a row's parts: the exports' stored rows are not ScoreRows."""
    out: dict[str, Any] = {"transcript_id": transcript_id, "repeat": repeat, **adjusted.scores}
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
    out["model"] = model
    out["status"] = status
    out["llm_total"] = _sum(list(adjusted.llm_scores.values()))
    out["critical_failed"] = adjusted.critical_failed
    out["adjustments"] = adjusted.describe()
    out["adjustment_ids"] = adjusted.codes()
    out["needs_review"] = bool(injection)
    out["injection_suspected"] = _injection_cell(injection)
    out.update(dict.fromkeys(CHECKS) | (check_columns or {}))
    return out


def _sum(values: list[int | None]) -> int | None:
    return None if None in values else sum(v for v in values if v is not None)


class StoredRow(NamedTuple):
    """A ScoreRow read from the stored rows: grades unvalidated, of the transcript's checks only the columns."""

    transcript_id: str
    repeat: int
    scores: dict[str, int | None]
    model: str
    status: str
    check_columns: dict[str, ColumnValue] | None
    grades: list[tuple[GradeRow, list[dict[str, Any]]]]
    """Each stored call with its criteria decoded (CriterionGrade dumps: criterion_id, score, reasoning, evidence)."""
    injection: list[dict[str, Any]]
    """The calls' prompt-injection hits (InjectionHit dumps), each once."""
    decisions: dict[str, Decision] | None


def _iter_stored_rows(store: Store, rubric: Rubric) -> Iterator[StoredRow]:
    """`iter_score_rows` for the exports: the same rows from the same streams, without building models."""
    criterion_ids = [c.id for c in rubric.criteria()]
    transcripts = store.iter_transcript_rows()
    transcript = next(transcripts, None)
    decisions = load_decisions(store)
    for (tid, repeat), group in groupby(store.iter_grade_rows(rubric_hash=rubric.content_hash), key=_ROW_KEY):
        while transcript is not None and transcript.id < tid:
            transcript = next(transcripts, None)
        grades = [(grade, json.loads(grade.criteria)) for grade in group]
        scores: dict[str, int | None] = dict.fromkeys(criterion_ids)
        for _, criteria in grades:
            for cg in criteria:
                scores[cg["criterion_id"]] = cg["score"]
        checks = transcript.checks if transcript is not None and transcript.id == tid else None
        injection = _unique_hits(hit for grade, _ in grades if grade.injection for hit in json.loads(grade.injection))
        yield StoredRow(tid, repeat, scores, grades[0][0].model, _row_status(scores), stored_check_columns(checks),
                        grades, injection, decisions.get(tid))


_ROW_KEY = attrgetter("transcript_id", "repeat")
_COLUMNS_KEY = ', "columns": '
_DECODER = json.JSONDecoder()


def stored_check_columns(checks: str | None) -> dict[str, ColumnValue] | None:
    """`ScoreRow.check_columns` from the stored checks text, decoding only the `columns` at its end when it can.

    A record is ~6 kB of per-message detail (json.loads of it took ~150 µs, the columns alone ~15), and
    `TranscriptChecks.record()` puts `columns` last. The last `, "columns": ` is a key, not string
    content (inside a string its `"` would be escaped); when the value after it ends one character
    before the text does, that character closes the object holding the key, which is the record itself.
    Any other record is decoded whole.
    """
    if not checks:
        return None
    at = checks.rfind(_COLUMNS_KEY)
    if at != -1:
        columns: dict[str, ColumnValue] | None
        columns, end = _DECODER.raw_decode(checks, at + len(_COLUMNS_KEY))
        if end == len(checks) - 1:
            return columns
    record = json.loads(checks)
    return record["columns"] if record else None


def _call(grade: GradeRow) -> dict[str, Any]:
    """The call's bookkeeping nested in each of its grades.jsonl lines."""
    return {
        "key": grade.key, "scope": grade.scope, "status": grade.status, "attempts": grade.attempts,
        "prompt_tokens": grade.prompt_tokens, "cached_tokens": grade.cached_tokens,
        "completion_tokens": grade.completion_tokens, "response_mode": grade.response_mode,
        "latency_s": grade.latency_s, "error": grade.error, "created_at": grade.created_at,
    }


class LineFields(NamedTuple):
    """What a grades line shows of one criterion beyond the stored call."""

    grade: GradeRow
    criterion: dict[str, Any]
    """The stored CriterionGrade: criterion_id, score (the LLM's), reasoning, evidence."""
    score: int | None
    """The final score."""
    adjustment: str | None
    evidence: str
    """The evidence as JSON text."""
    quotes_verified: bool


def iter_line_fields(row: StoredRow, adjusted: AdjustedScores) -> Iterator[LineFields]:
    """One per grades line: per stored call, per criterion, in stored order."""
    for grade, criteria in row.grades:
        for cg in criteria:
            cid = cg["criterion_id"]
            evidence = cg["evidence"]
            yield LineFields(
                grade, cg, adjusted.scores.get(cid), adjusted.describe(cid) if adjusted.adjustments else None,
                _evidence_json(evidence), all(e["verified"] for e in evidence),
            )


def _evidence_json(evidence: list[dict[str, Any]]) -> str:
    """json.dumps of `[e.model_dump() for e in evidence]`: QuotedEvidence's keys are turn, quote, verified,
    verify_failed (absent from grades stored before it existed: null)."""
    items = [f'{{"turn": {e["turn"]}, "quote": {_ENCODE(e["quote"])}, "verified": {_json_bool(e["verified"])}, '
             f'"verify_failed": {_json_failure(e.get("verify_failed"))}}}'
             for e in evidence]
    return f"[{', '.join(items)}]"


def _json_failure(value: str | None) -> str:
    return "null" if value is None else f'"{value}"'  # one of VerifyFailure's ascii words


def _json_bool(value: bool) -> str:
    return "true" if value else "false"


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(value)


def _grade_lines_json(row: StoredRow, adjusted: AdjustedScores) -> str:
    """The row's grades.jsonl lines, one per stored call and criterion, as one text.

    Each line is `json.dumps(line, ensure_ascii=False)` of the line the module docstring describes:
    `llm_score` is the model's score, `score` the final one, `adjustment` what changed it, and `call`
    the call's bookkeeping (encoded once per call, not once per line).
    """
    head = f'{{"transcript_id": {_ENCODE(row.transcript_id)}, "repeat": {row.repeat}, "criterion_id": '
    failed = _json_bool(adjusted.critical_failed)
    tails: dict[str, str] = {}
    out = []
    for f in iter_line_fields(row, adjusted):
        grade, cg = f.grade, f.criterion
        tail = tails.get(grade.key)
        if tail is None:
            tail = tails[grade.key] = (f', "injection_suspected": {_injection_json(grade)}, '
                                       f'"model": {_ENCODE(grade.model)}, "call": {_ENCODE(_call(grade))}}}\n')
        llm = cg["score"]
        out.append(
            f'{head}{_ENCODE(cg["criterion_id"])}, "status": "{"scored" if llm is not None else "unscored"}", '
            f'"llm_score": {_json_int(llm)}, "score": {_json_int(f.score)}, '
            f'"adjustment": {"null" if f.adjustment is None else _ENCODE(f.adjustment)}, "critical_failed": {failed}, '
            f'"reasoning": {_ENCODE(cg["reasoning"])}, "evidence": {f.evidence}, '
            f'"quotes_verified": {_json_bool(f.quotes_verified)}{tail}'
        )
    return "".join(out)


def _injection_json(grade: GradeRow) -> str:
    """The call's hits as json.dumps writes them: the store keeps compact JSON, and most calls have none."""
    return _ENCODE(json.loads(grade.injection)) if grade.injection else "[]"


def _flat_grade_rows(row: StoredRow, adjusted: AdjustedScores) -> Iterator[dict[str, Any]]:
    """grades.jsonl's lines flattened for a table: evidence as JSON text, the call's fields as `call_*` columns."""
    for f in iter_line_fields(row, adjusted):
        cg = f.criterion
        yield {
            "transcript_id": row.transcript_id, "repeat": row.repeat, "criterion_id": cg["criterion_id"],
            "status": "scored" if cg["score"] is not None else "unscored", "llm_score": cg["score"],
            "score": f.score, "adjustment": f.adjustment, "critical_failed": adjusted.critical_failed,
            "reasoning": cg["reasoning"], "evidence": f.evidence, "quotes_verified": f.quotes_verified,
            "injection_suspected": _injection_json(f.grade), "model": f.grade.model,
            **{f"call_{k}": v for k, v in _call(f.grade).items()},
        }


def run_judge(store: Store) -> JudgeProvenance | None:
    """The judge of the store's last run, or None when no run is recorded."""
    run = store.last_run()
    return judge_of_run(run) if run is not None else None


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
    needs_review: int
    """Rows whose chat addresses the grader: left out of the means, for a person to grade."""
    written: bool
    """False when the files were already up to date and were left alone."""
    judge: JudgeProvenance | None
    """The judge of the store's last run, as judge.json says."""


_EXPORT_STAMP = "exports"
_CODE = hashlib.sha256(b"".join(Path(m).read_bytes() for m in (__file__, adjustments.__file__))).hexdigest()


def refresh_outputs(store: Store, rubric: Rubric, out_dir: Path) -> Outputs:
    """Write scores.csv, grades.jsonl and checks.jsonl, unless nothing they show has changed since last time,
    and always judge.json, the note of which judge graded (pipeline/outputs/provenance.py).

    A resume that grades nothing would otherwise rewrite every file (hundreds of MB for 10^5 chats).
    The files are up to date when they all exist and the store's change counter, the rubric (hooks
    included: they change final scores) and this module's code are what they were when they were
    written, and so are the reviewers' decisions (resolved disputes); the means come back from that time.
    """
    paths = (out_dir / "scores.csv", out_dir / "grades.jsonl", out_dir / "checks.jsonl")
    judge = run_judge(store)
    if judge is not None:
        write_judge_file(judge, out_dir)
    rubric_dump = json.dumps(rubric.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
    stamp = {"changes": store.changes(), "rubric": hashlib.sha256(rubric_dump.encode()).hexdigest(), "code": _CODE,
             "decisions": store.decisions_stamp()}
    kept = store.meta_value(_EXPORT_STAMP)
    if kept is not None and all(p.exists() for p in paths):
        previous = json.loads(kept)
        if previous["stamp"] == stamp:
            return Outputs(*paths, previous["means"], previous["needs_review"], written=False, judge=judge)
    means, needs_review = _write_scores_and_grades(store, rubric, out_dir)
    write_checks(store, out_dir)
    store.set_meta_value(_EXPORT_STAMP, json.dumps({"stamp": stamp, "means": means, "needs_review": needs_review}))
    return Outputs(*paths, means, needs_review, written=True, judge=judge)


def _write_scores_and_grades(store: Store, rubric: Rubric, out_dir: Path) -> tuple[dict[str, float | None], int]:
    """One pass over the store for both files; returns the mean final points per dimension and for the
    total over fully scored rows that need no review, and the number of rows that do."""
    sums: dict[str, float] = {d.id: 0.0 for d in rubric.dimensions} | {"total": 0.0}
    scored = needs_review = 0
    columns = score_columns(rubric)
    cells = itemgetter(*columns)
    grades_path = out_dir / "grades.jsonl"
    with _open_csv(out_dir / "scores.csv") as scores_fh, grades_path.open("w", encoding="utf-8") as grades:
        scores = csv.writer(scores_fh)
        scores.writerow(csv_cells(columns))
        for row, adjusted, values in iter_final_rows(store, rubric):
            scores.writerow(csv_cells(cells(values)))  # csv writes None as an empty cell
            grades.write(escape_separators(_grade_lines_json(row, adjusted)))
            if row.injection:
                needs_review += 1
            elif row.status == "scored":
                scored += 1
                for k in sums:
                    sums[k] += values[k]
    return {k: (round(v / scored, 2) if scored else None) for k, v in sums.items()}, needs_review


def iter_final_rows(store: Store, rubric: Rubric) -> Iterator[tuple[StoredRow, AdjustedScores, dict[str, Any]]]:
    """Each stored row with its final scores and its `row_values`."""
    for row in _iter_stored_rows(store, rubric):
        adjusted = apply_hooks(rubric, row.scores, row.check_columns, row.decisions)
        yield row, adjusted, _final_values(rubric, adjusted, row.transcript_id, row.repeat, row.model, row.status,
                                           row.check_columns, row.injection)


def _open_csv(path: Path) -> TextIO:
    # utf-8-sig so that Excel on Windows opens Chinese text correctly.
    return path.open("w", encoding="utf-8-sig", newline="")


def write_checks(store: Store, out_dir: Path) -> Path:
    """Write OUT/checks.jsonl: one line per transcript with its metadata and its checks (null if none).

    The stored checks text goes in as it is: json.dumps(..., ensure_ascii=False) wrote it, so decoding
    and encoding it again would give the same text, at the cost of a few kB of JSON per transcript.
    """
    path = out_dir / "checks.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for t in store.iter_transcript_rows():
            meta = _ENCODE({"transcript_id": t.id, "platform": t.platform, "shop": t.shop, "agent_id": t.agent_id,
                            "started_at": t.started_at, "n_turns": t.n_turns, "source": t.source})
            fh.write(escape_separators(f'{meta[:-1]}, "checks": {t.checks or "null"}}}\n'))
    return path


def export_run(store: Store, rubric: Rubric, fmt: ExportFormat, dest: Path) -> list[Path]:
    """Export scores and per-criterion grades as csv, xlsx or parquet files under `dest`.

    Text cells of csv and xlsx never hold a live formula (pipeline/outputs/cells.py).
    """
    dest.mkdir(parents=True, exist_ok=True)
    columns = score_columns(rubric)
    cells = itemgetter(*columns)
    if fmt == "csv":
        scores = dest / "scores.csv"
        grades = dest / "grades.csv"
        with _open_csv(scores) as scores_fh, _open_csv(grades) as grades_fh:
            score_writer, grade_writer = csv.writer(scores_fh), csv.writer(grades_fh)
            score_writer.writerow(csv_cells(columns))
            header = False
            for row, adjusted, values in iter_final_rows(store, rubric):
                score_writer.writerow(csv_cells(cells(values)))
                for line in _flat_grade_rows(row, adjusted):
                    if not header:  # the keys of the first line; no grade, no header: an empty grades.csv
                        grade_writer.writerow(csv_cells(line))
                        header = True
                    grade_writer.writerow(csv_cells(line.values()))
        return [scores, grades]
    if fmt == "xlsx":
        from pipeline.outputs.spreadsheet import write_spreadsheet  # here: it imports this module

        judge = run_judge(store)
        return [write_spreadsheet(store, rubric, dest / "scores.xlsx", judge_note=judge.note if judge else None)]
    import pandas as pd  # imported here: pandas costs half a second and only parquet needs it

    score_rows: list[dict[str, Any]] = []
    grade_rows: list[dict[str, Any]] = []
    for row, adjusted, values in iter_final_rows(store, rubric):
        score_rows.append(values)
        grade_rows.extend(_flat_grade_rows(row, adjusted))
    paths = [dest / "scores.parquet", dest / "grades.parquet"]
    pd.DataFrame(score_rows, columns=columns).to_parquet(paths[0], index=False)
    pd.DataFrame(grade_rows).to_parquet(paths[1], index=False)
    return paths
