"""The review tables (`kefu review`): reviewers' labels, disputes of a grade, and the append-only audit trail."""

from __future__ import annotations

import json
from typing import Any

from pipeline.store.database import Database, now
from pipeline.store.rows import AuditRow, DisputeRow, LabelRow


class ReviewTables(Database):
    """The human review's methods of `Store` (migration 006): each write is audited in its transaction."""

    def _audit(self, actor: str, action: str, transcript_id: str, criterion_id: str | None,
               detail: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO audit (at, actor, action, transcript_id, criterion_id, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (now(), actor, action, transcript_id, criterion_id, json.dumps(detail, ensure_ascii=False)),
        )

    def save_label(self, *, transcript_id: str, criterion_id: str, score: int, rater_id: str, rubric_id: str,
                   rubric_version: str) -> LabelRow:
        """Add a reviewer's score (committed on return); a later one by the same rater replaces it in `labels`."""
        at = now()
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
        at = now()
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
        at = now()
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
