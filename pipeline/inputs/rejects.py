"""rejects.jsonl: how an input that was not graded is written down."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from pipeline.jsonlines import escape_separators
from pipeline.models.transcript import Reject


def reject_line(reject: Reject) -> str:
    """One line of a rejects file, newline included: the Reject as compact JSON, Chinese kept readable.

    Every rejects file (rejects.jsonl of grade, batch and dry runs, label_rejects.jsonl) is written
    through here, so they all have the same bytes for the same reject. A file name or an id may hold
    U+2028 and the like, which are escaped so that the line stays one line for any reader.
    """
    return escape_separators(reject.model_dump_json()) + "\n"


def write_rejects(rejects: Iterable[Reject], path: Path) -> int:
    """Append rejects to a JSONL file (Chinese kept readable); returns how many were written."""
    written = 0
    with path.open("a", encoding="utf-8") as out:
        for reject in rejects:
            out.write(reject_line(reject))
            written += 1
    return written
