"""The run store (`Store`): a run folder's runs, grades, transcripts and finished lines, as one object.

Every grade is committed as it completes, so a crash, kill -9 or Ctrl-C loses no finished grade,
and a rerun skips every finished key without sending a request. The connection, its migrations and
its one transaction helper are `pipeline.store.database`'s; the batch and review tables' methods come
from `BatchTables` and `ReviewTables`, so every caller holds one `Store`.

What a resume loads at its start (the finished keys, the finished lines) comes back as the compact
structures of `pipeline.store.digests`, read in chunks of `LOAD_CHUNK_ROWS` rows: at 10^7 chats a Python
set and dict of them held about 3.5 GB, these hold about 18 bytes a key and 27 bytes plus the
transcript id a line, and loading never holds a Python object per row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.models.grade import CRITERION_GRADES, INJECTION_HITS, Grade
from pipeline.models.transcript import Transcript
from pipeline.store import transcript_figures
from pipeline.store.batches import BatchTables
from pipeline.store.database import now
from pipeline.store.digests import KeySet, LineIds
from pipeline.store.review import ReviewTables
from pipeline.store.rows import Checks, FinishedLine, GradeRow, TranscriptMeta, TranscriptRow

DB_NAME = "kefu.sqlite"

# A stored scored grade is final: a later failure under the same key (a batch's, a concurrent run's) leaves it.
_INSERT_GRADE = (
    "INSERT INTO grades (key, run_id, transcript_id, repeat, scope, status, rubric_hash, model, attempts,"
    " prompt_tokens, cached_tokens, completion_tokens, error, raw, response_mode, latency_s, created_at, criteria,"
    " injection) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO UPDATE SET"
    " run_id = excluded.run_id, transcript_id = excluded.transcript_id, repeat = excluded.repeat,"
    " scope = excluded.scope, status = excluded.status, rubric_hash = excluded.rubric_hash, model = excluded.model,"
    " attempts = excluded.attempts, prompt_tokens = excluded.prompt_tokens, cached_tokens = excluded.cached_tokens,"
    " completion_tokens = excluded.completion_tokens, error = excluded.error, raw = excluded.raw,"
    " response_mode = excluded.response_mode, latency_s = excluded.latency_s, created_at = excluded.created_at,"
    " criteria = excluded.criteria, injection = excluded.injection WHERE grades.status = 'unscored'"
)
_INSERT_LINE = "INSERT OR REPLACE INTO finished_lines VALUES (?, ?, ?)"

LOAD_CHUNK_ROWS = 65536
"""Rows fetched at a time while a resume's keys or lines are loaded: bounds what loading holds beyond the result."""

_PENDING_KEYS = "SELECT grade_key FROM batch_requests WHERE collected_at IS NULL"


class Store(BatchTables, ReviewTables):
    """A run folder's database. Open with `Store.open(out_dir)`; use as a context manager."""

    @classmethod
    def open(cls, out_dir: Path) -> Store:
        """The store of a run folder, created on first use."""
        return cls(out_dir / DB_NAME)


    # --- runs -------------------------------------------------------------------------------
    def start_run(self, *, rubric_id: str, rubric_version: str, rubric_hash: str, template_hash: str,
                  model: str, settings: dict[str, Any]) -> int:
        """Record a run's start; `settings` must not contain secrets (the caller strips the key)."""
        cur = self._db.execute(
            "INSERT INTO runs (started_at, rubric_id, rubric_version, rubric_hash, template_hash, model, settings)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (now(), rubric_id, rubric_version, rubric_hash, template_hash, model,
             json.dumps(settings, ensure_ascii=False, sort_keys=True)),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        """Record a run's end and its summary."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE id = ?",
            (now(), json.dumps(summary, ensure_ascii=False), run_id),
        )

    def last_run(self) -> dict[str, Any] | None:
        """The most recent run's row, as a dict."""
        cur = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    def run(self, run_id: int) -> dict[str, Any] | None:
        """One run's row, as a dict (a batch is collected against the run that wrote it)."""
        cur = self._db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    # --- grades -----------------------------------------------------------------------------
    def finished_keys(self, *, include_unscored: bool = True, pending_batches: bool = False,
                      chunk_rows: int = LOAD_CHUNK_ROWS) -> KeySet:
        """Keys that need no request: every stored grade, or only scored ones (for --retry-failed).

        With `pending_batches`, also the keys in a batch file whose result is not collected yet, which a
        new batch file must not repeat.
        """
        sql = "SELECT key FROM grades" + ("" if include_unscored else " WHERE status = 'scored'")
        if pending_batches:
            sql += " UNION ALL " + _PENDING_KEYS
        return KeySet.from_rows(_chunks(self._db.execute(sql), chunk_rows))

    def pending_batch_keys(self, *, chunk_rows: int = LOAD_CHUNK_ROWS) -> KeySet | None:
        """Keys a batch file holds whose result is not collected yet; None when there are none (the usual case)."""
        if self._db.execute("SELECT 1 FROM batch_requests WHERE collected_at IS NULL LIMIT 1").fetchone() is None:
            return None
        return KeySet.from_rows(_chunks(self._db.execute(_PENDING_KEYS), chunk_rows))

    def grade_status(self, key: str) -> tuple[str, str] | None:
        """A stored grade's status and created_at (UTC ISO), or None: whether a result would be news."""
        row = self._db.execute("SELECT status, created_at FROM grades WHERE key = ?", (key,)).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def save_grade(self, grade: Grade, run_id: int, rubric_hash: str, *, meta: TranscriptMeta | None = None,
                   finished_line: FinishedLine | None = None) -> None:
        """Commit one grade now (replacing an unscored one under the same key on --retry-failed; a scored one stays).

        With `meta` (the transcript's first grade), its metadata is stored in the same transaction;
        with `finished_line` (its last), the line is recorded as finished there too, so the store
        never says a line is finished without its grades.
        """
        row = (
            grade.key, run_id, grade.transcript_id, grade.repeat, grade.scope, grade.status, rubric_hash,
            grade.model, grade.attempts, grade.prompt_tokens, grade.cached_tokens, grade.completion_tokens,
            grade.error, grade.raw, grade.response_mode, grade.latency_s, grade.created_at.isoformat(),
            CRITERION_GRADES.dump_json(grade.criteria).decode(),  # one call, not one per criterion
            INJECTION_HITS.dump_json(grade.injection).decode() if grade.injection else None,
        )
        if meta is None and finished_line is None:
            self._db.execute(_INSERT_GRADE, row)
            return
        with self._transaction():
            if meta is not None:
                self.save_transcript(*meta)
            self._db.execute(_INSERT_GRADE, row)
            if finished_line is not None:
                self._db.execute(_INSERT_LINE, finished_line)

    def save_batch_grade(self, grade: Grade | None, run_id: int, rubric_hash: str, *, custom_id: str) -> None:
        """Commit a grade collected from a batch and mark its request collected, together.

        `grade` None marks the request collected without storing its result (a newer one is stored).
        """
        with self._transaction():
            if grade is not None:
                self.save_grade(grade, run_id, rubric_hash)
            self._db.execute("UPDATE batch_requests SET collected_at = ? WHERE custom_id = ?", (now(), custom_id))

    def iter_grades(self, *, rubric_hash: str | None = None) -> Iterator[Grade]:
        """Stored grades ordered by transcript, repeat and scope, streamed."""
        sql = "SELECT * FROM grades"
        args: tuple[Any, ...] = ()
        if rubric_hash:
            sql += " WHERE rubric_hash = ?"
            args = (rubric_hash,)
        cur = self._db.execute(sql + " ORDER BY transcript_id, repeat, scope", args)
        names = [d[0] for d in cur.description]
        for row in cur:
            data = dict(zip(names, row, strict=True))
            criteria = CRITERION_GRADES.validate_json(data.pop("criteria"))
            injection = data.pop("injection")
            data["injection"] = INJECTION_HITS.validate_json(injection) if injection else []
            for dropped in ("run_id", "rubric_hash", "scores", "unverified"):  # the last two: derived (migration 007)
                data.pop(dropped)
            yield Grade(criteria=criteria, **data)

    def iter_grade_rows(self, *, rubric_hash: str) -> Iterator[GradeRow]:
        """A rubric's stored grades in `iter_grades` order, unvalidated and streamed."""
        cur = self._db.execute(
            f"SELECT {', '.join(GradeRow._fields)} FROM grades WHERE rubric_hash = ?"  # names from GradeRow
            " ORDER BY transcript_id, repeat, scope",
            (rubric_hash,),
        )
        return map(GradeRow._make, cur)

    def count_grades(self) -> dict[str, int]:
        """Number of stored grades per status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM grades GROUP BY status").fetchall())

    # --- resume and exports -----------------------------------------------------------------
    def finished_lines(self, fingerprint: str, *, chunk_rows: int = LOAD_CHUNK_ROWS) -> LineIds:
        """Digest → transcript id of every input line finished under this run fingerprint."""
        cur = self._db.execute(
            "SELECT digest, CAST(transcript_id AS BLOB) FROM finished_lines"  # the id's UTF-8, as LineIds holds it
            " WHERE fingerprint = ? AND length(digest) = 16",
            (fingerprint,),
        )
        return LineIds.from_rows(_chunks(cur, chunk_rows))

    def save_finished_line(self, line: FinishedLine) -> None:
        """Record a line as finished whose grades were all stored before (by an earlier run)."""
        self._db.execute(_INSERT_LINE, line)

    def changes(self) -> int:
        """A counter that moves with every change to grades or transcript metadata (see migration 003)."""
        return int(self._db.execute("SELECT value FROM meta WHERE name = 'changes'").fetchone()[0])

    def meta_value(self, name: str) -> str | None:
        """A value the store keeps for other modules (the exports' stamp)."""
        row = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta_value(self, name: str, value: str) -> None:
        """Set a value kept with `meta_value`; `changes` is the store's own."""
        if name == "changes":
            raise ValueError("'changes' is kept by the store's triggers")
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (name, value))

    # --- transcripts ------------------------------------------------------------------------
    def save_transcript_meta(self, *, transcript_id: str, content_hash: str, platform: str | None,
                             shop: str | None, agent_id: str | None, started_at: datetime | None,
                             n_turns: int, source: str | None, checks: Checks = None) -> None:
        """Remember what was graded (not the text): for summaries by shop, agent and day."""
        self._db.execute(
            "INSERT OR REPLACE INTO transcripts (id, content_hash, platform, shop, agent_id, started_at, n_turns,"
            " source, checks) VALUES (?,?,?,?,?,?,?,?,?)",
            (transcript_id, content_hash, platform, shop, agent_id,
             started_at.isoformat() if started_at else None, n_turns, source,
             checks if checks is None or isinstance(checks, str) else json.dumps(checks, ensure_ascii=False)),
        )

    def save_transcript(self, t: Transcript, content_hash: str, checks: Checks) -> None:
        """save_transcript_meta for a Transcript: its metadata and first timestamp, not its text."""
        self.save_transcript_meta(
            transcript_id=t.id, content_hash=content_hash, platform=t.platform, shop=t.shop, agent_id=t.agent_id,
            started_at=next((turn.time for turn in t.turns if turn.time), None), n_turns=len(t.turns),
            source=t.source, checks=checks,
        )

    def transcript_meta(self) -> dict[str, dict[str, Any]]:
        """Every transcript's stored metadata by id."""
        cur = self._db.execute("SELECT * FROM transcripts")
        names = [d[0] for d in cur.description]
        out = {}
        for row in cur:
            data = dict(zip(names, row, strict=True))
            data["checks"] = json.loads(data["checks"]) if data["checks"] else None
            out[data["id"]] = data
        return out

    def iter_transcript_meta(self) -> Iterator[dict[str, Any]]:
        """Every transcript's stored metadata, streamed in id order (the order of `iter_grades`)."""
        cur = self._db.execute("SELECT * FROM transcripts ORDER BY id")
        names = [d[0] for d in cur.description]
        for row in cur:
            data = dict(zip(names, row, strict=True))
            data["checks"] = json.loads(data["checks"]) if data["checks"] else None
            yield data

    def iter_transcript_rows(self) -> Iterator[TranscriptRow]:
        """Every transcript's stored metadata in id order (as `iter_transcript_meta`), checks undecoded."""
        cur = self._db.execute(f"SELECT {', '.join(TranscriptRow._fields)} FROM transcripts ORDER BY id")
        return map(TranscriptRow._make, cur)

    def transcript_checks(self, transcript_id: str) -> dict[str, Any] | None:
        """One transcript's stored checks, or None: a resumed run reuses them instead of checking again."""
        row = self._db.execute("SELECT checks FROM transcripts WHERE id = ?", (transcript_id,)).fetchone()
        return json.loads(row[0]) if row is not None and row[0] else None

    def transcript_row(self, transcript_id: str) -> TranscriptRow | None:
        """One transcript's stored metadata, checks undecoded."""
        row = self._db.execute(f"SELECT {', '.join(TranscriptRow._fields)} FROM transcripts WHERE id = ?",
                               (transcript_id,)).fetchone()
        return None if row is None else TranscriptRow._make(row)

    def transcript_grade_rows(self, transcript_id: str, *, rubric_hash: str) -> list[GradeRow]:
        """One chat's stored grades under a rubric, by repeat and scope."""
        cur = self._db.execute(
            f"SELECT {', '.join(GradeRow._fields)} FROM grades WHERE rubric_hash = ? AND transcript_id = ?"
            " ORDER BY repeat, scope",
            (rubric_hash, transcript_id),
        )
        return list(map(GradeRow._make, cur))

    def grade_figures(self, *, rubric_hash: str) -> bytes:
        """Per stored grade under a rubric, in `iter_grades` order, one JSON line: transcript_id, repeat,
        scores {criterion_id: score}, unverified (quotes that failed verification), needs_review (injection
        found): migration 007's figures, joined into lines by SQLite, so no Python object is made per grade."""
        row = self._db.execute(
            "SELECT CAST(group_concat(line, char(10)) AS BLOB) FROM (SELECT '{\"transcript_id\":'"
            " || json_quote(transcript_id) || ',\"repeat\":' || repeat"
            " || ',\"unverified\":' || COALESCE(unverified, 0) || ',\"needs_review\":'"
            " || CASE WHEN injection IS NULL THEN 'false' ELSE 'true' END"
            " || ',\"scores\":' || COALESCE(scores, '{}') || '}' AS line"
            " FROM grades WHERE rubric_hash = ? ORDER BY transcript_id, repeat, scope)",
            (rubric_hash,),
        ).fetchone()
        return bytes(row[0] or b"")

    def transcript_figures(self) -> bytes:
        """Every transcript's figures as CSV lines, in the columns `transcript_figures` names."""
        return transcript_figures.figures_csv(self._db)


def _chunks(cur: sqlite3.Cursor, rows: int) -> Iterator[list[Any]]:
    """A cursor's rows, `rows` at a time."""
    while chunk := cur.fetchmany(rows):
        yield chunk

