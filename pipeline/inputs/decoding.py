"""Decoding a file's lines as UTF-8 or GBK, the encoding chosen from the file's first bytes."""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from pipeline.inputs.limits import MAX_LINE_BYTES
from pipeline.inputs.problems import FileRejected
from pipeline.models.transcript import Reject

SNIFF_BYTES = 64 * 1024
"""How far a reader looks ahead to decide a file's encoding; otherwise it reads one line at a time."""


class Line(NamedTuple):
    """One decoded line; if `decoded` is False its bytes were invalid and `text` has U+FFFD in their place."""

    number: int
    text: str
    decoded: bool


_ENCODING_NAMES = {"utf-8": "UTF-8", "gb18030": "GBK"}


class LineDecoder:
    """Decodes a file line by line as UTF-8 or GBK (read as its superset GB18030).

    The choice is made from the non-ASCII lines in the first SNIFF_BYTES, or, if those are all
    ASCII, from the first non-ASCII line later on. Only whole lines are decoded, and both encodings
    keep the newline byte to itself, so a bad line never spoils its neighbours.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.encoding: str | None = None
        self.too_long: set[int] = set()

    def lines(self, raw_lines: Iterable[bytes]) -> Iterator[Line]:
        """Every line, numbered from 1 and decoded."""
        for number, raw in self.numbered(raw_lines):
            yield self.decode(number, raw)

    def numbered(self, raw_lines: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
        """Every line numbered from 1, undecoded (a reader may skip some); the encoding is decided first."""
        raw_iter = iter(raw_lines)
        head: list[bytes] = []
        size = 0
        for raw in raw_iter:
            head.append(raw)
            size += len(raw)
            if size >= SNIFF_BYTES:
                break
        self._decide(head)
        return enumerate(itertools.chain(head, raw_iter), start=1)

    def decode(self, number: int, raw: bytes) -> Line:
        """One line of this file, decoded in the file's encoding; a line over MAX_LINE_BYTES is not decoded."""
        if len(raw) > MAX_LINE_BYTES:
            self.too_long.add(number)
            return Line(number, "\ufffd", False)
        if raw.isascii():
            return Line(number, raw.decode("ascii"), True)
        if self.encoding is None:
            self.encoding = _choose_encoding([raw])
        try:
            return Line(number, raw.decode(self.encoding or "utf-8"), True)
        except UnicodeDecodeError:
            return Line(number, raw.decode(self.encoding or "utf-8", "replace"), False)

    def undecodable(self, line: int) -> str:
        """The reason for a line that did not decode."""
        if line in self.too_long:
            return f"line {line} is longer than {MAX_LINE_BYTES // 2**20} MiB: not read"
        if self.encoding is None:
            return f"undecodable bytes on line {line} (neither UTF-8 nor GBK)"
        name = _ENCODING_NAMES[self.encoding]
        return f"undecodable bytes on line {line} (not valid {name}, the encoding of the rest of the file)"

    def _decide(self, head: list[bytes]) -> None:
        if head and head[0].startswith(codecs.BOM_UTF8):
            head[0] = head[0][len(codecs.BOM_UTF8):]
            self.encoding = "utf-8"
            return
        if any(b"\x00" in raw for raw in head):
            raise FileRejected(Reject(
                file=self.source, line=1,
                reason="the file contains NUL bytes: it is UTF-16 or binary, not UTF-8/GBK text "
                       "(in Excel, save as 'CSV UTF-8')",
            ))
        non_ascii = [raw for raw in head if not raw.isascii()]
        self.encoding = _choose_encoding(non_ascii)
        # One or two bad lines are not enough to condemn a file; they are rejected one by one.
        if self.encoding is None and len(non_ascii) >= _MIN_EVIDENCE_LINES:
            raise FileRejected(Reject(
                file=self.source, line=1,
                reason=f"the file is neither UTF-8 nor GBK text (checked its first {len(head)} lines)",
            ))


_MIN_EVIDENCE_LINES = 3


def _choose_encoding(samples: list[bytes]) -> str | None:
    """UTF-8 or GB18030, whichever decodes more of `samples`; None if neither decodes at least half."""
    failures = {enc: sum(not _decodes(raw, enc) for raw in samples) for enc in ("utf-8", "gb18030")}
    best = min(failures, key=lambda encoding: failures[encoding])  # ties go to UTF-8, listed first
    return best if failures[best] * 2 <= len(samples) and failures[best] < len(samples) else None


def _decodes(raw: bytes, encoding: str) -> bool:
    try:
        raw.decode(encoding)
    except UnicodeDecodeError:
        return False
    return True
