"""The run store: the only module that opens the SQLite database (OUT/kefu.sqlite, WAL mode).

Every grade is committed as it completes, so a crash, kill -9 or Ctrl-C loses no finished grade,
and a rerun skips every finished key without sending a request. Schema changes are a plain
ordered list of named migration functions, applied once each.

What a resume loads at its start (the finished keys, the finished lines) comes back as the compact
structures of `pipeline.store.digests`, read in chunks of `LOAD_CHUNK_ROWS` rows: at 10^7 chats a Python
set and dict of them held about 3.5 GB, these hold about 18 bytes a key and 27 bytes plus the
transcript id a line, and loading never holds a Python object per row.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.checks.injection import INJECTION_HITS
from pipeline.grading.grader import CRITERION_GRADES, Grade, Sampling
from pipeline.models.transcript import Transcript
from pipeline.store.digests import KeySet, LineIds

DB_NAME = "kefu.sqlite"

# A stored scored grade is final: a later failure under the same key (a batch's, a concurrent run's) leaves it.
_INSERT_GRADE = (
    "INSERT INTO grades VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO UPDATE SET"
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


Checks = dict[str, Any] | str | None
"""A transcript's checks record (pipeline/checks/checker.py), or its JSON text as `checks.record_json` writes it."""


class TranscriptMeta(NamedTuple):
    """What `Store.save_transcript` stores of a transcript: its metadata, content hash and checks."""

    transcript: Transcript
    content_hash: str
    checks: Checks


class FinishedLine(NamedTuple):
    """An input line whose grades are all stored, under one run fingerprint (see `pipeline.grading.resume`)."""

    fingerprint: str
    digest: bytes
    transcript_id: str


class BatchRequest(NamedTuple):
    """One request line of a batch file, as `Store.record_batch_file` records it."""

    custom_id: str
    transcript_id: str
    transcript_hash: str
    repeat: int
    scope: str
    key: str | None = None
    """The grade's resume key; None when it is the custom_id (a key's first request)."""


class GradeRow(NamedTuple):
    """A stored grade as its columns, unvalidated (`Store.iter_grade_rows`): exports read every grade, and
    validating each into a `Grade` cost them more than writing it."""

    key: str
    transcript_id: str
    repeat: int
    scope: str
    status: str
    model: str
    attempts: int
    prompt_tokens: int
    cached_tokens: int | None
    completion_tokens: int
    error: str | None
    response_mode: str
    latency_s: float
    created_at: str
    """`Grade.created_at.isoformat()`, as stored."""
    criteria: str
    """The JSON `CRITERION_GRADES` dumped: a list of `CriterionGrade` objects."""
    injection: str | None
    """The JSON `INJECTION_HITS` dumped, or None when the chat has none."""


class TranscriptRow(NamedTuple):
    """A transcript's stored metadata (`Store.iter_transcript_rows`), checks left as their JSON text."""

    id: str
    platform: str | None
    shop: str | None
    agent_id: str | None
    started_at: str | None
    n_turns: int
    source: str | None
    checks: str | None
    """`json.dumps(record, ensure_ascii=False)` of `TranscriptChecks.record()`, or None."""


class LabelRow(NamedTuple):
    """A reviewer's current score of one criterion of one chat (`Store.labels`)."""

    id: int
    transcript_id: str
    criterion_id: str
    score: int
    rater_id: str
    rubric_id: str
    rubric_version: str
    labelled_at: str
    """UTC, ISO 8601."""


class DisputeRow(NamedTuple):
    """A dispute (申诉) of one criterion's grade, open or resolved (`Store.disputes`)."""

    id: int
    transcript_id: str
    criterion_id: str
    reason: str
    opened_by: str
    opened_at: str
    status: str
    """'open' or 'resolved'."""
    final_score: int | None
    resolved_by: str | None
    resolved_at: str | None
    note: str | None


class AuditRow(NamedTuple):
    """One line of the append-only audit trail: who did what to which chat, when."""

    id: int
    at: str
    actor: str
    action: str
    transcript_id: str
    criterion_id: str | None
    detail: str
    """JSON of what was saved."""


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


def _m002_batches(db: sqlite3.Connection) -> None:
    """Batch API manifest: what each batch file holds, where it is at the provider, and what was collected.

    `batch_transcripts` keeps each graded transcript exactly as it was sent (the batch file on disk
    holds the same text), because collecting checks the model's quotes against it, maybe days later
    and in another process.
    """
    _execute_all(
        db,
        """
        CREATE TABLE batches (
            local_file TEXT PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES runs(id),
            rubric_hash TEXT NOT NULL,
            model TEXT NOT NULL,
            response_mode TEXT NOT NULL,
            requests INTEGER NOT NULL,
            bytes INTEGER NOT NULL,
            status TEXT NOT NULL,
            batch_id TEXT,
            input_file_id TEXT,
            output_file_id TEXT,
            error_file_id TEXT,
            completed INTEGER,
            failed INTEGER,
            errors TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            collected_at TEXT
        );
        CREATE TABLE batch_requests (
            custom_id TEXT PRIMARY KEY,
            local_file TEXT NOT NULL REFERENCES batches(local_file),
            transcript_id TEXT NOT NULL,
            transcript_hash TEXT NOT NULL,
            repeat INTEGER NOT NULL,
            scope TEXT NOT NULL,
            collected_at TEXT
        );
        CREATE INDEX batch_requests_by_file ON batch_requests (local_file, collected_at);
        CREATE TABLE batch_transcripts (
            content_hash TEXT PRIMARY KEY,
            transcript TEXT NOT NULL
        );
        """
    )


def _m003_resume_and_exports(db: sqlite3.Connection) -> None:
    """Finished input lines (a resume skips them unparsed) and a change counter (exports skip an unchanged store).

    `finished_lines` holds, per run fingerprint (see `pipeline.grading.resume`), the digest of every input
    line whose grades are all stored and whose checks are current. `meta.changes` counts every
    insert, update and delete of a grade or a transcript's metadata, by trigger, so it changes
    whenever an export would (a rowid or a count would not: a replaced row can get its old rowid).
    """
    _execute_all(
        db,
        """
        CREATE TABLE finished_lines (
            fingerprint TEXT NOT NULL,
            digest BLOB NOT NULL,
            transcript_id TEXT NOT NULL,
            PRIMARY KEY (fingerprint, digest)
        ) WITHOUT ROWID;
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('changes', '0')
        """,
    )
    for table in ("grades", "transcripts"):
        for event in ("INSERT", "UPDATE", "DELETE"):
            db.execute(
                f"CREATE TRIGGER {table}_{event.lower()}_counts AFTER {event} ON {table} BEGIN "
                "UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE name = 'changes'; END"
            )


def _m004_batch_attempts(db: sqlite3.Connection) -> None:
    """What makes batch steps safe to repeat: the grade key of each request, and each provider call's intent.

    A request written again (`--retry-failed`) gets a custom_id of its own, so a result line of the
    older file can never be taken for the newer one's; `grade_key` says whose grade both are.
    `upload_started_at` and `create_started_at` are set before the call: when its answer is lost, the
    next run looks for the file or batch at the provider instead of paying for a second one.
    `collect_error` says why a finished batch could not be collected (kept until it is).
    """
    _execute_all(
        db,
        """
        ALTER TABLE batch_requests ADD COLUMN grade_key TEXT;
        UPDATE batch_requests SET grade_key = custom_id;
        CREATE INDEX batch_requests_by_key ON batch_requests (grade_key);
        ALTER TABLE batches ADD COLUMN upload_started_at TEXT;
        ALTER TABLE batches ADD COLUMN create_started_at TEXT;
        ALTER TABLE batches ADD COLUMN collect_error TEXT
        """,
    )


def _m005_injection(db: sqlite3.Connection) -> None:
    """A grade's prompt-injection hits (`Grade.injection`): NULL for none, as for every grade stored before."""
    db.execute("ALTER TABLE grades ADD COLUMN injection TEXT")


def _m006_review(db: sqlite3.Connection) -> None:
    """Human review (`kefu review`): labels, disputes and an append-only audit trail.

    `labels` is append-only: a reviewer who changes an answer adds a row, and the latest row per
    rater, transcript and criterion is the label. A dispute is opened, then resolved once with a
    final score; a resolved dispute's score is the criterion's final score in every export (the
    exports' stamp includes `decisions_stamp`; `meta.changes` stays about grades and transcripts).
    `audit` refuses UPDATE and DELETE by trigger.
    """
    _execute_all(
        db,
        """
        CREATE TABLE labels (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            transcript_id TEXT NOT NULL,
            criterion_id TEXT NOT NULL,
            score INTEGER NOT NULL,
            rater_id TEXT NOT NULL,
            rubric_id TEXT NOT NULL,
            rubric_version TEXT NOT NULL,
            labelled_at TEXT NOT NULL
        );
        CREATE INDEX labels_by_transcript ON labels (transcript_id, criterion_id, rater_id);
        CREATE TABLE disputes (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            transcript_id TEXT NOT NULL,
            criterion_id TEXT NOT NULL,
            reason TEXT NOT NULL,
            opened_by TEXT NOT NULL,
            opened_at TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
            final_score INTEGER,
            resolved_by TEXT,
            resolved_at TEXT,
            note TEXT
        );
        CREATE INDEX disputes_by_transcript ON disputes (transcript_id, criterion_id);
        CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at TEXT NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            transcript_id TEXT NOT NULL,
            criterion_id TEXT,
            detail TEXT NOT NULL
        )
        """,
    )
    for event in ("UPDATE", "DELETE"):  # one statement each: their bodies hold a ';'
        db.execute(f"CREATE TRIGGER audit_no_{event.lower()} BEFORE {event} ON audit BEGIN "
                   "SELECT RAISE(ABORT, 'audit is append-only'); END")


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_batches", _m002_batches),
    ("003_resume_and_exports", _m003_resume_and_exports),
    ("004_batch_attempts", _m004_batch_attempts),
    ("005_injection", _m005_injection),
    ("006_review", _m006_review),
]

# What the provider tells about a batch, and what kefu records around its calls: the columns `update_batch` may set.
_BATCH_UPDATES = frozenset(
    {"status", "batch_id", "input_file_id", "output_file_id", "error_file_id", "completed", "failed", "errors",
     "collected_at", "upload_started_at", "create_started_at", "collect_error"}
)


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

    @contextmanager
    def _transaction(self, *, immediate: bool = False) -> Iterator[None]:
        """`immediate` takes the write lock first, so a read-then-write never deadlocks with another writer."""
        self._db.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

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
            for dropped in ("run_id", "rubric_hash"):
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
            "INSERT OR REPLACE INTO transcripts VALUES (?,?,?,?,?,?,?,?,?)",
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

    # --- review: labels, disputes, audit (migration 004) ------------------------------------
    def _audit(self, actor: str, action: str, transcript_id: str, criterion_id: str | None,
               detail: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, actor, action, transcript_id, criterion_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (_now(), actor, action, transcript_id, criterion_id, json.dumps(detail, ensure_ascii=False)),
        )

    def save_label(self, *, transcript_id: str, criterion_id: str, score: int, rater_id: str, rubric_id: str,
                   rubric_version: str) -> LabelRow:
        """Add a reviewer's score (committed on return); a later one by the same rater replaces it in `labels`."""
        at = _now()
        with self._transaction(immediate=True):
            cur = self._db.execute(
                "INSERT INTO labels (transcript_id, criterion_id, score, rater_id, rubric_id, rubric_version,"
                " labelled_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (transcript_id, criterion_id, score, rater_id, rubric_id, rubric_version, at),
            )
            row = LabelRow(int(cur.lastrowid or 0), transcript_id, criterion_id, score, rater_id, rubric_id,
                           rubric_version, at)
            self._audit(rater_id, "label", transcript_id, criterion_id, {"score": score, "label_id": row.id})
        return row

    def labels(self, transcript_id: str | None = None) -> list[LabelRow]:
        """Each rater's latest score per chat and criterion, of one chat or of all, in save order."""
        where, args = ("WHERE transcript_id = ?", (transcript_id,)) if transcript_id is not None else ("", ())
        cur = self._db.execute(
            f"SELECT {', '.join(LabelRow._fields)} FROM labels WHERE id IN (SELECT MAX(id) FROM labels {where}"
            " GROUP BY transcript_id, criterion_id, rater_id) ORDER BY id",  # names from LabelRow
            args,
        )
        return list(map(LabelRow._make, cur))

    def open_dispute(self, *, transcript_id: str, criterion_id: str, reason: str, opened_by: str) -> DisputeRow:
        """Open a dispute of a criterion's grade (committed on return)."""
        at = _now()
        with self._transaction(immediate=True):
            cur = self._db.execute(
                "INSERT INTO disputes (transcript_id, criterion_id, reason, opened_by, opened_at, status)"
                " VALUES (?, ?, ?, ?, ?, 'open')",
                (transcript_id, criterion_id, reason, opened_by, at),
            )
            row = DisputeRow(int(cur.lastrowid or 0), transcript_id, criterion_id, reason, opened_by, at, "open",
                             None, None, None, None)
            self._audit(opened_by, "dispute_open", transcript_id, criterion_id, {"dispute": row.id, "reason": reason})
        return row

    def resolve_dispute(self, dispute_id: int, *, final_score: int, resolved_by: str, note: str) -> DisputeRow | None:
        """Resolve an open dispute with the final score; None when there is no open dispute of that id."""
        at = _now()
        with self._transaction(immediate=True):
            cur = self._db.execute(
                "UPDATE disputes SET status = 'resolved', final_score = ?, resolved_by = ?, resolved_at = ?, note = ?"
                " WHERE id = ? AND status = 'open'",
                (final_score, resolved_by, at, note, dispute_id),
            )
            if cur.rowcount != 1:
                return None
            row = self.dispute(dispute_id)
            assert row is not None  # updated just now, in this transaction
            self._audit(resolved_by, "dispute_resolve", row.transcript_id, row.criterion_id,
                        {"dispute": dispute_id, "final_score": final_score, "note": note})
        return row

    def dispute(self, dispute_id: int) -> DisputeRow | None:
        """One dispute by id."""
        row = self._db.execute(f"SELECT {', '.join(DisputeRow._fields)} FROM disputes WHERE id = ?",
                               (dispute_id,)).fetchone()
        return None if row is None else DisputeRow._make(row)

    def disputes(self, *, transcript_id: str | None = None, status: str | None = None) -> list[DisputeRow]:
        """Disputes, newest first, of one chat and/or one status."""
        clauses = [(c, v) for c, v in (("transcript_id = ?", transcript_id), ("status = ?", status)) if v is not None]
        where = f" WHERE {' AND '.join(c for c, _ in clauses)}" if clauses else ""
        cur = self._db.execute(
            f"SELECT {', '.join(DisputeRow._fields)} FROM disputes{where} ORDER BY id DESC",  # fixed clauses
            tuple(v for _, v in clauses),
        )
        return list(map(DisputeRow._make, cur))

    def decisions(self) -> dict[str, dict[str, DisputeRow]]:
        """Per chat and criterion, the latest resolved dispute: its score is the criterion's final score."""
        out: dict[str, dict[str, DisputeRow]] = {}
        for row in self.disputes(status="resolved")[::-1]:  # oldest first: the latest wins
            out.setdefault(row.transcript_id, {})[row.criterion_id] = row
        return out

    def decisions_stamp(self) -> str:
        """Changes whenever a dispute is resolved: the resolved disputes' ids, in order."""
        ids = [row[0] for row in self._db.execute("SELECT id FROM disputes WHERE status = 'resolved' ORDER BY id")]
        return ",".join(map(str, ids))

    def audit_trail(self, transcript_id: str | None = None) -> list[AuditRow]:
        """The audit lines, of one chat or of all, in the order written."""
        where, args = (" WHERE transcript_id = ?", (transcript_id,)) if transcript_id is not None else ("", ())
        cur = self._db.execute(f"SELECT {', '.join(AuditRow._fields)} FROM audit{where} ORDER BY id", args)
        return list(map(AuditRow._make, cur))

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

    def iter_score_cells(self, *, rubric_hash: str) -> Iterator[tuple[str, int, str, str]]:
        """(transcript id, repeat, status, JSON [[criterion_id, score], ...]) per stored grade in `iter_grades`
        order: the scores without the reasoning and evidence, extracted by SQLite (the review overview's index)."""
        return self._db.execute(
            "SELECT transcript_id, repeat, status, (SELECT json_group_array(json_array("
            "json_extract(j.value, '$.criterion_id'), json_extract(j.value, '$.score'))) FROM json_each(criteria) j)"
            " FROM grades WHERE rubric_hash = ? ORDER BY transcript_id, repeat, scope",
            (rubric_hash,),
        )

    def iter_transcript_facets(self) -> Iterator[tuple[str | None, ...]]:
        """(id, platform, shop, agent, day, check columns JSON) per transcript in id order, extracted by SQLite:
        agent and day as `kefu summary` groups them (the checks' agent, else the stored one; the checks' day)."""
        return self._db.execute(
            "SELECT id, platform, shop, COALESCE(json_extract(checks, '$.timing.agent'), agent_id),"
            " json_extract(checks, '$.timing.day'), json_extract(checks, '$.columns') FROM transcripts ORDER BY id"
        )

    # --- batches ----------------------------------------------------------------------------
    def record_batch_file(self, *, local_file: str, run_id: int, rubric_hash: str, model: str, response_mode: str,
                          size_bytes: int, requests: list[BatchRequest] | list[tuple[str, str, str, int, str]],
                          transcripts: dict[str, str]) -> None:
        """Record a written batch file with its requests and their transcripts, all or nothing.

        `requests` are `BatchRequest`s (or their first five fields). `transcripts` maps content hash to
        the transcript's JSON as sent.
        """
        now = _now()
        self._db.execute("BEGIN")
        try:
            self._db.execute(
                "INSERT INTO batches (local_file, run_id, rubric_hash, model, response_mode, requests, bytes, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'written', ?, ?)",
                (local_file, run_id, rubric_hash, model, response_mode, len(requests), size_bytes, now, now),
            )
            self._db.executemany(
                "INSERT INTO batch_requests (custom_id, local_file, transcript_id, transcript_hash, repeat, scope,"
                " grade_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.custom_id, local_file, r.transcript_id, r.transcript_hash, r.repeat, r.scope, r.key or r.custom_id)
                 for r in (BatchRequest(*request) for request in requests)],
            )
            self._db.executemany("INSERT OR IGNORE INTO batch_transcripts VALUES (?, ?)", list(transcripts.items()))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def batch_files(self) -> list[dict[str, Any]]:
        """Every batch file's row, in the order written."""
        cur = self._db.execute("SELECT * FROM batches ORDER BY created_at, local_file")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def update_batch(self, local_file: str, **fields: Any) -> None:
        """Record what the provider said about a batch file (ids, status, counts); stamps `updated_at`."""
        unknown = set(fields) - _BATCH_UPDATES
        if unknown:
            raise ValueError(f"not a batch column that can be updated: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in fields)
        self._db.execute(
            f"UPDATE batches SET {assignments}, updated_at = ? WHERE local_file = ?",  # names from _BATCH_UPDATES
            (*fields.values(), _now(), local_file),
        )

    def batch_request(self, custom_id: str) -> dict[str, Any] | None:
        """The request a batch output line answers, or None if no batch file of this run folder has it."""
        cur = self._db.execute("SELECT * FROM batch_requests WHERE custom_id = ?", (custom_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row, strict=True))

    def uncollected_requests(self, local_file: str) -> list[dict[str, Any]]:
        """The requests of a batch file that no collected line has answered yet."""
        cur = self._db.execute(
            "SELECT * FROM batch_requests WHERE local_file = ? AND collected_at IS NULL ORDER BY custom_id",
            (local_file,),
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur]

    def batch_writes(self, key: str) -> int:
        """How many batch requests have been written for a grade key (each gets its own custom_id)."""
        return int(self._db.execute("SELECT COUNT(*) FROM batch_requests WHERE grade_key = ?", (key,)).fetchone()[0])

    def batch_transcript(self, content_hash: str) -> str | None:
        """The JSON of a transcript as a batch file sent it."""
        row = self._db.execute(
            "SELECT transcript FROM batch_transcripts WHERE content_hash = ?", (content_hash,)
        ).fetchone()
        return None if row is None else str(row[0])

    def save_batch_grade(self, grade: Grade | None, run_id: int, rubric_hash: str, *, custom_id: str) -> None:
        """Commit a grade collected from a batch and mark its request collected, together.

        `grade` None marks the request collected without storing its result (a newer one is stored).
        """
        self._db.execute("BEGIN")
        try:
            if grade is not None:
                self.save_grade(grade, run_id, rubric_hash)
            self._db.execute("UPDATE batch_requests SET collected_at = ? WHERE custom_id = ?", (_now(), custom_id))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def batch_run_totals(self, run_id: int) -> dict[str, int]:
        """Grades and tokens collected for a batch run: its summary once every file is collected."""
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(g.status = 'scored'), 0), COALESCE(SUM(g.status = 'unscored'), 0),"
            " COALESCE(SUM(g.prompt_tokens), 0), COALESCE(SUM(g.cached_tokens), 0),"
            " COALESCE(SUM(g.completion_tokens), 0)"
            " FROM batch_requests r JOIN batches b ON b.local_file = r.local_file"
            " JOIN grades g ON g.key = r.grade_key WHERE b.run_id = ? AND r.collected_at IS NOT NULL",
            (run_id,),
        ).fetchone()
        names = ("requests", "graded", "unscored", "prompt_tokens", "cached_tokens", "completion_tokens")
        return dict(zip(names, (int(v) for v in row), strict=True))


_PENDING_KEYS = "SELECT grade_key FROM batch_requests WHERE collected_at IS NULL"


def _chunks(cur: sqlite3.Cursor, rows: int) -> Iterator[list[Any]]:
    """A cursor's rows, `rows` at a time."""
    while chunk := cur.fetchmany(rows):
        yield chunk


def _now() -> str:
    return datetime.now(UTC).isoformat()
