"""The run store: the only module that opens the SQLite database (OUT/kefu.sqlite, WAL mode).

Every grade is committed as it completes, so a crash, kill -9 or Ctrl-C loses no finished grade,
and a rerun skips every finished key without sending a request. Schema changes are a plain
ordered list of named migration functions, applied once each.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.grader import CriterionGrade, Grade, Sampling

DB_NAME = "kefu.sqlite"


def grade_key(
    *,
    transcript_hash: str,
    rubric_hash: str,
    template_hash: str,
    model: str,
    sampling: Sampling,
    repeat: int,
    scope: str,
    options: dict[str, Any] | None = None,
) -> str:
    """The resume key of one call — a contract: sha256 of the canonical JSON of exactly these inputs.

    Transcript content, rubric content, template content, model, sampling parameters, repeat index,
    scope ('all' or a criterion id) and options that change what is sent (e.g. redaction). Change any
    of them and the grade is new; the repeat index makes repeats independent samples, never cached.
    """
    payload = {
        "v": 1,
        "transcript": transcript_hash,
        "rubric": rubric_hash,
        "templates": template_hash,
        "model": model,
        "sampling": sampling.model_dump(mode="json"),
        "repeat": repeat,
        "scope": scope,
        "options": options or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _execute_all(db: sqlite3.Connection, script: str) -> None:
    """Run statements one by one (executescript would commit the migration's transaction midway)."""
    for statement in script.split(";"):
        if statement.strip():
            db.execute(statement)


def _m001_initial(db: sqlite3.Connection) -> None:
    _execute_all(
        db,
        """
        CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            rubric_id TEXT NOT NULL,
            rubric_version TEXT NOT NULL,
            rubric_hash TEXT NOT NULL,
            template_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            settings TEXT NOT NULL,
            summary TEXT
        );
        CREATE TABLE grades (
            key TEXT PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            transcript_id TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            scope TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('scored', 'unscored')),
            rubric_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            cached_tokens INTEGER,
            completion_tokens INTEGER NOT NULL,
            error TEXT,
            raw TEXT,
            response_mode TEXT NOT NULL,
            latency_s REAL NOT NULL,
            created_at TEXT NOT NULL,
            criteria TEXT NOT NULL
        );
        CREATE INDEX grades_by_transcript ON grades (rubric_hash, transcript_id, repeat);
        CREATE TABLE transcripts (
            id TEXT PRIMARY KEY,
            content_hash TEXT NOT NULL,
            platform TEXT,
            shop TEXT,
            agent_id TEXT,
            started_at TEXT,
            n_turns INTEGER NOT NULL,
            source TEXT,
            checks TEXT
        );
        """
    )


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_initial", _m001_initial),
]


class Store:
    """A run folder's database. Open with `Store.open(out_dir)`; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed grade survives a process crash or kill -9 (not a power cut).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    @classmethod
    def open(cls, out_dir: Path) -> Store:
        """The store of a run folder, created on first use."""
        return cls(out_dir / DB_NAME)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (WAL contents stay durable)."""
        self._db.close()

    def _migrate(self) -> None:
        self._db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row[0] for row in self._db.execute("SELECT name FROM migrations")}
        for name, migrate in MIGRATIONS:
            if name in done:
                continue
            self._db.execute("BEGIN")
            migrate(self._db)
            self._db.execute("INSERT INTO migrations VALUES (?, ?)", (name, _now()))
            self._db.execute("COMMIT")

    # --- runs -------------------------------------------------------------------------------
    def start_run(self, *, rubric_id: str, rubric_version: str, rubric_hash: str, template_hash: str,
                  model: str, settings: dict[str, Any]) -> int:
        """Record a run's start; `settings` must not contain secrets (the caller strips the key)."""
        cur = self._db.execute(
            "INSERT INTO runs (started_at, rubric_id, rubric_version, rubric_hash, template_hash, model, settings)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (_now(), rubric_id, rubric_version, rubric_hash, template_hash, model,
             json.dumps(settings, ensure_ascii=False, sort_keys=True)),
        )
        return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, summary: dict[str, Any]) -> None:
        """Record a run's end and its summary."""
        self._db.execute(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE id = ?",
            (_now(), json.dumps(summary, ensure_ascii=False), run_id),
        )

    def last_run(self) -> dict[str, Any] | None:
        """The most recent run's row, as a dict."""
        cur = self._db.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1")
        row = cur.fetchone()
        if row is None:
            return None
        return dict(zip([d[0] for d in cur.description], row, strict=True))

    # --- grades -----------------------------------------------------------------------------
    def finished_keys(self, *, include_unscored: bool = True) -> set[str]:
        """Keys that need no request: every stored grade, or only scored ones (for --retry-failed)."""
        sql = "SELECT key FROM grades" + ("" if include_unscored else " WHERE status = 'scored'")
        return {row[0] for row in self._db.execute(sql)}

    def save_grade(self, grade: Grade, run_id: int, rubric_hash: str) -> None:
        """Commit one grade now (replacing an unscored one under the same key on --retry-failed)."""
        self._db.execute(
            "INSERT OR REPLACE INTO grades VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                grade.key, run_id, grade.transcript_id, grade.repeat, grade.scope, grade.status, rubric_hash,
                grade.model, grade.attempts, grade.prompt_tokens, grade.cached_tokens, grade.completion_tokens,
                grade.error, grade.raw, grade.response_mode, grade.latency_s, grade.created_at.isoformat(),
                json.dumps([c.model_dump(mode="json") for c in grade.criteria], ensure_ascii=False),
            ),
        )

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
            criteria = [CriterionGrade.model_validate(c) for c in json.loads(data.pop("criteria"))]
            for dropped in ("run_id", "rubric_hash"):
                data.pop(dropped)
            yield Grade(criteria=criteria, **data)

    def count_grades(self) -> dict[str, int]:
        """Number of stored grades per status."""
        return dict(self._db.execute("SELECT status, COUNT(*) FROM grades GROUP BY status").fetchall())

    # --- transcripts ------------------------------------------------------------------------
    def save_transcript_meta(self, *, transcript_id: str, content_hash: str, platform: str | None,
                             shop: str | None, agent_id: str | None, started_at: datetime | None,
                             n_turns: int, source: str | None, checks: dict[str, Any] | None = None) -> None:
        """Remember what was graded (not the text): for summaries by shop, agent and day."""
        self._db.execute(
            "INSERT OR REPLACE INTO transcripts VALUES (?,?,?,?,?,?,?,?,?)",
            (transcript_id, content_hash, platform, shop, agent_id,
             started_at.isoformat() if started_at else None, n_turns, source,
             json.dumps(checks, ensure_ascii=False) if checks is not None else None),
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


def _now() -> str:
    return datetime.now(UTC).isoformat()
