"""Finished input lines: a resumed run skips a JSONL line it has fully graded without parsing it.

The resume key of a grade (`store.grade_key`) needs the transcript's hash, so on its own it makes a
rerun parse, validate and hash every line before it can tell that nothing is left to do (about a
millisecond a line: minutes over a large backlog). The store therefore also remembers the digest
of each raw line whose grades are all stored and whose checks are current, under a fingerprint of
everything else those grades depend on (rubric, templates, model, sampling, repeats, scopes, key
options such as redaction, the checker, and the reader's options). A line with the same text under
the same fingerprint is the same work already done; any other line, or any other setting, takes
the normal path, and the grade keys stay the authority.

Only JSON Lines are skipped this way (one line, one conversation); CSV and chat-log conversations
span lines and always take the normal path.

The finished lines of the fingerprint are loaded once, at the run's start, as a `LineIds`
(`pipeline.store.digests`): each line's 16-byte blake2b digest, sorted, and its transcript id as UTF-8, about
27 bytes plus the id a line instead of about 160–200 in a dict, so that a backlog of 10^7 lines fits. The id
comes back exactly: the reader reports it as `Finished`, checks it for duplicates, and `--only` filters
on it.
"""

from __future__ import annotations

import hashlib
import json
from hashlib import blake2b
from typing import Any

from pipeline.store.digests import LineIds
from pipeline.store.rows import FinishedLine
from pipeline.store.store import Store


class LineMemo:
    """The finished lines of one run: looked up by the reader, filled in by the runner."""

    def __init__(self, reader_options: dict[str, Any]) -> None:
        self.reader_options = reader_options
        self.fingerprint = ""
        self._known: LineIds | None = None
        self._last: tuple[str, bytes] | None = None

    def open(self, store: Store, run: dict[str, Any], *, skip: bool) -> None:
        """Fix the run's fingerprint from `run` (the grade settings) and, if `skip`, load its finished lines.

        `skip` is False for --retry-failed: a finished line may hold unscored grades to retry.
        """
        payload = json.dumps({"v": 1, "run": run, "reader": self.reader_options}, sort_keys=True, default=str)
        self.fingerprint = hashlib.sha256(payload.encode()).hexdigest()
        self._known = store.finished_lines(self.fingerprint) if skip else None

    def lookup(self, line: bytes, source: str) -> str | None:
        """The transcript id if this line (its bytes as read) is finished; otherwise None, and the line is
        remembered as `source`."""
        digest = blake2b(line, digest_size=16).digest()
        transcript_id = self._known.get(digest) if self._known is not None else None
        self._last = None if transcript_id is not None else (source, digest)
        return transcript_id

    def line_of(self, source: str | None, transcript_id: str) -> FinishedLine | None:
        """The finished-line record for the transcript just read from `source`, if it came from one JSONL line."""
        if self._last is None or self._last[0] != source:
            return None
        return FinishedLine(self.fingerprint, self._last[1], transcript_id)
