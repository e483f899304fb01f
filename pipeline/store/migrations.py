"""The database's schema: a plain ordered list of named migration functions, each applied once (see `Database`).

A migration's name and SQL never change once released: a store records which names it has applied.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable


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


_GRADE_FIGURES = (
    "scores = (SELECT json_group_object(json_extract(j.value, '$.criterion_id'), json_extract(j.value, '$.score'))"
    " FROM json_each({row}.criteria) j),"
    " unverified = (SELECT COUNT(*) FROM json_each({row}.criteria) j, json_each(j.value, '$.evidence') e"
    " WHERE json_extract(e.value, '$.verified') = 0)"
)
# The checks' flat columns but the two texts for people (reals copied as JSON text, so exactly) and the few
# integers and texts of the reports the summary reads besides them (pipeline/outputs/summary.py).
_TRANSCRIPT_FIGURES = (  # NULL for checks that are not strict JSON (a NaN): the write must not fail on them
    "figures = CASE WHEN json_valid({row}.checks) THEN json_patch(json_remove(json_extract({row}.checks,"
    " '$.columns'), '$.phrase_hits', '$.greeting_text'), json_object("
    "'agent', json_extract({row}.checks, '$.timing.agent'), 'day', json_extract({row}.checks, '$.timing.day'),"
    " 'messages_within_rate_limit', json_extract({row}.checks, '$.timing.messages_within_rate_limit'),"
    " 'agent_turns', json_extract({row}.checks, '$.phrases.agent_turns'),"
    " 'banned', json_extract({row}.checks, '$.phrases.counts.banned'),"
    " 'negation_refusal', json_extract({row}.checks, '$.phrases.counts.negation_refusal'))) END"
)


def _m007_overview_figures(db: sqlite3.Connection) -> None:
    """Each grade's and each transcript's figures as small flat JSON objects beside the big ones, kept by trigger.

    `grades.scores` is {criterion_id: score} and `grades.unverified` the number of quotes that failed
    verification; `transcripts.figures` is the checks' flat columns plus the timing and phrase counts
    the summary reads. The review overview and `kefu summary` read these (a few hundred bytes a row,
    parsed column-wise) instead of decoding every grade's reasoning and every transcript's ~6 kB of
    checks. Triggers fill them on every write of `criteria` or `checks`, so they cannot go stale;
    existing rows are filled here once.
    """
    _execute_all(
        db,
        """
        ALTER TABLE grades ADD COLUMN scores TEXT;
        ALTER TABLE grades ADD COLUMN unverified INTEGER;
        ALTER TABLE transcripts ADD COLUMN figures TEXT
        """,
    )
    for table, columns, figures in (("grades", "criteria", _GRADE_FIGURES), ("transcripts", "checks",
                                                                             _TRANSCRIPT_FIGURES)):
        set_new = figures.format(row="NEW")
        db.execute(f"CREATE TRIGGER {table}_insert_figures AFTER INSERT ON {table} BEGIN "
                   f"UPDATE {table} SET {set_new} WHERE rowid = NEW.rowid; END")
        db.execute(f"CREATE TRIGGER {table}_update_figures AFTER UPDATE OF {columns} ON {table} BEGIN "
                   f"UPDATE {table} SET {set_new} WHERE rowid = NEW.rowid; END")
        db.execute(f"UPDATE {table} SET {figures.format(row=table)}")


def _m008_transcript_figures_table(db: sqlite3.Connection) -> None:
    """Transcripts' figures move from a JSON column of `transcripts` to CSV lines in a narrow table of their own.

    `pipeline/store/transcript_figures.py` says why; it makes the table and its triggers from the current
    check columns and fills it (the store does so after the migrations, and again whenever they change).
    """
    _execute_all(
        db,
        """
        DROP TRIGGER transcripts_insert_figures;
        DROP TRIGGER transcripts_update_figures;
        ALTER TABLE transcripts DROP COLUMN figures
        """,
    )


MIGRATIONS: list[tuple[str, Callable[[sqlite3.Connection], None]]] = [
    ("001_initial", _m001_initial),
    ("002_batches", _m002_batches),
    ("003_resume_and_exports", _m003_resume_and_exports),
    ("004_batch_attempts", _m004_batch_attempts),
    ("005_injection", _m005_injection),
    ("006_review", _m006_review),
    ("007_overview_figures", _m007_overview_figures),
    ("008_transcript_figures_table", _m008_transcript_figures_table),
]
