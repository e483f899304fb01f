"""The connection to a run folder's database: the only place SQLite is opened (WAL mode, migrated on open).

Every write that spans statements goes through one helper, `Database._transaction`; the table groups
(`Store`'s core, `BatchTables`, `ReviewTables`) are subclasses sharing this connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from pipeline.store import transcript_figures
from pipeline.store.migrations import MIGRATIONS


class Database:
    """A run folder's SQLite connection; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a committed grade survives a process crash or kill -9 (not a power cut).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._migrate()

    def __enter__(self) -> Self:
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
            with self._transaction():
                migrate(self._db)
                self._db.execute("INSERT INTO migrations VALUES (?, ?)", (name, now()))
        if not transcript_figures.is_current(self._db):  # a store made by a version with other check columns
            with self._transaction(immediate=True):
                if not transcript_figures.is_current(self._db):  # another process may have just done it
                    transcript_figures.rebuild(self._db)

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


def now() -> str:
    """The UTC time as the store writes it (ISO 8601)."""
    return datetime.now(UTC).isoformat()
