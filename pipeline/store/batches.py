"""The batch tables: what each batch file holds, where it is at the provider, and what was collected (`kefu batch`)."""

from __future__ import annotations

from typing import Any

from pipeline.store.database import Database, now
from pipeline.store.rows import BatchRequest

# What the provider tells about a batch, and what kefu records around its calls: the columns `update_batch` may set.
_BATCH_UPDATES = frozenset(
    {"status", "batch_id", "input_file_id", "output_file_id", "error_file_id", "completed", "failed", "errors",
     "collected_at", "upload_started_at", "create_started_at", "collect_error"}
)


class BatchTables(Database):
    """The batch manifest's methods of `Store` (migrations 002 and 004)."""

    def record_batch_file(self, *, local_file: str, run_id: int, rubric_hash: str, model: str, response_mode: str,
                          size_bytes: int, requests: list[BatchRequest] | list[tuple[str, str, str, int, str]],
                          transcripts: dict[str, str]) -> None:
        """Record a written batch file with its requests and their transcripts, all or nothing.

        `requests` are `BatchRequest`s (or their first five fields). `transcripts` maps content hash to
        the transcript's JSON as sent.
        """
        at = now()
        with self._transaction():
            self._db.execute(
                "INSERT INTO batches (local_file, run_id, rubric_hash, model, response_mode, requests, bytes, status,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'written', ?, ?)",
                (local_file, run_id, rubric_hash, model, response_mode, len(requests), size_bytes, at, at),
            )
            self._db.executemany(
                "INSERT INTO batch_requests (custom_id, local_file, transcript_id, transcript_hash, repeat, scope,"
                " grade_key) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(r.custom_id, local_file, r.transcript_id, r.transcript_hash, r.repeat, r.scope, r.key or r.custom_id)
                 for r in (BatchRequest(*request) for request in requests)],
            )
            self._db.executemany("INSERT OR IGNORE INTO batch_transcripts VALUES (?, ?)", list(transcripts.items()))

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
            (*fields.values(), now(), local_file),
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

