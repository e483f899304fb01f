"""Each transcript's figures as one CSV line in a narrow table of their own, kept by trigger.

The review overview and `kefu summary` read every transcript's check columns and a few counts. Read
from `transcripts`, each row's ~6 kB of checks sits in overflow pages that SQLite walks to reach a
later column, and JSON lines repeat every key name (a 100,000-chat run's were 99 MB). Here a line
holds values only (about 220 bytes), in a table of its own, and Arrow's CSV reader parses them on
both cores. The columns come from `CHECKS`; when they (or this SQL) change, `ensure_transcript_figures`
`Database` rebuilds the triggers and refills the table once, on the next open of the store.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import NamedTuple

from pipeline.models.checks import CHECKS, CheckKind

_LAYOUT_META = "transcript_figures_layout"


class FigureColumn(NamedTuple):
    """One value of a transcript's figures line: its name, where it is in the stored checks, and its kind."""

    name: str
    path: str
    kind: CheckKind


_COUNTS = (  # what the summary reads besides the check columns (pipeline/outputs/summary.py)
    FigureColumn("agent", "$.timing.agent", CheckKind.choice),
    FigureColumn("day", "$.timing.day", CheckKind.choice),
    FigureColumn("messages_within_rate_limit", "$.timing.messages_within_rate_limit", CheckKind.number),
    FigureColumn("agent_turns", "$.phrases.agent_turns", CheckKind.number),
    FigureColumn("banned", "$.phrases.counts.banned", CheckKind.number),
    FigureColumn("negation_refusal", "$.phrases.counts.negation_refusal", CheckKind.number),
)
FIGURE_COLUMNS: tuple[FigureColumn, ...] = tuple(
    FigureColumn(name, f"$.columns.{name}", spec.kind) for name, spec in CHECKS.items()
    if spec.kind is not CheckKind.detail  # texts for people, not figures
) + _COUNTS
"""The checks' values on each line, after transcript_id, platform, shop, stored_agent and has_checks."""

_TEXT_KINDS = (CheckKind.reason, CheckKind.choice)


def _csv_text(sql: str) -> str:
    """A text value as a CSV field: quoted with its quotes doubled (ids and names hold commas and newlines);
    NULL as the empty unquoted field, which the reader takes as null."""
    return f"COALESCE('\"' || replace({sql}, '\"', '\"\"') || '\"', '')"


def _value(column: FigureColumn, checks: str) -> str:
    """A check value as a CSV field. Numbers and flags are copied as their JSON text (so a real is exact)."""
    if column.kind in _TEXT_KINDS:
        return _csv_text(f"{checks} ->> '{column.path}'")
    return f"COALESCE(NULLIF({checks} -> '{column.path}', 'null'), '')"


def _line(row: str) -> str:
    """The SQL of one transcript's line; has_checks is false for checks that are missing or not strict JSON
    (a NaN): the write must not fail on them."""
    checks = f"{row}.checks"
    values = " || ',' || ".join(_value(c, checks) for c in FIGURE_COLUMNS)
    head = " || ',' || ".join(_csv_text(f"{row}.{name}") for name in ("id", "platform", "shop", "agent_id"))
    nothing = "false" + "," * len(FIGURE_COLUMNS)
    return (f"{head} || ',' || CASE WHEN json_valid({checks}) THEN CASE WHEN json_type({checks}, '$.columns')"
            f" = 'object' THEN 'true,' || {values} ELSE '{nothing}' END ELSE '{nothing}' END")


def _statements() -> list[str]:
    """The table's triggers and its refill, built from the current columns."""
    new = _line("NEW")
    return [
        "CREATE TABLE IF NOT EXISTS transcript_figures (transcript_id TEXT PRIMARY KEY, line TEXT NOT NULL)"
        " WITHOUT ROWID",
        "CREATE TRIGGER transcript_figures_insert AFTER INSERT ON transcripts BEGIN"
        f" INSERT OR REPLACE INTO transcript_figures VALUES (NEW.id, {new}); END",
        "CREATE TRIGGER transcript_figures_update AFTER UPDATE ON transcripts BEGIN"
        " DELETE FROM transcript_figures WHERE transcript_id = OLD.id;"
        f" INSERT OR REPLACE INTO transcript_figures VALUES (NEW.id, {new}); END",
        "CREATE TRIGGER transcript_figures_delete AFTER DELETE ON transcripts BEGIN"
        " DELETE FROM transcript_figures WHERE transcript_id = OLD.id; END",
        "DELETE FROM transcript_figures",
        f"INSERT INTO transcript_figures SELECT id, {_line('transcripts')} FROM transcripts",
    ]


def _layout() -> str:
    """What the stored lines were made by: a digest of the SQL (which names every column and path)."""
    return hashlib.sha256("\n".join(_statements()).encode()).hexdigest()


def is_current(db: sqlite3.Connection) -> bool:
    """Whether the stored triggers and lines were made by this version's columns."""
    found = db.execute("SELECT value FROM meta WHERE name = ?", (_LAYOUT_META,)).fetchone()
    return found is not None and found[0] == _layout()


def rebuild(db: sqlite3.Connection) -> None:
    """Replace the triggers and refill every line from the stored checks (inside the caller's transaction)."""
    for event in ("insert", "update", "delete"):
        db.execute(f"DROP TRIGGER IF EXISTS transcript_figures_{event}")
    for statement in _statements():
        db.execute(statement)
    db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (_LAYOUT_META, _layout()))


def figures_csv(db: sqlite3.Connection) -> bytes:
    """Every transcript's line (transcript_id, platform, shop, stored_agent, has_checks, then `FIGURE_COLUMNS`),
    joined by SQLite, so no Python object is made per transcript."""
    row = db.execute("SELECT CAST(group_concat(line, char(10)) AS BLOB) FROM transcript_figures").fetchone()
    return bytes(row[0] or b"")
