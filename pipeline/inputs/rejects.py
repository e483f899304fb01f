"""rejects.jsonl: how an input that was not graded is written down."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pipeline.models.transcript import Reject


def reject_line(reject: Reject) -> str:
    """One line of a rejects file, newline included: the Reject as JSON, Chinese kept readable."""
    return json.dumps(reject.model_dump(), ensure_ascii=False) + "\n"


def write_rejects(rejects: Iterable[Reject], path: Path) -> int:
    """Append rejects to a JSONL file (Chinese kept readable); returns how many were written."""
    written = 0
    with path.open("a", encoding="utf-8") as out:
        for reject in rejects:
            out.write(reject_line(reject))
            written += 1
    return written
