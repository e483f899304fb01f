"""What a format reader is given: the file being read, the run's reading context, a conversation in progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, tzinfo
from typing import NamedTuple, Protocol

from pipeline.inputs.decoding import LineDecoder
from pipeline.inputs.fields import field_time
from pipeline.inputs.ids import RunIds
from pipeline.models.transcript import Finished, Reject, Transcript, Turn


class SourceFile(NamedTuple):
    """The file being read: its name as reported, its number in the run, and its decoder."""

    source: str
    number: int
    decoder: LineDecoder


@dataclass
class Pending:
    """A conversation being collected from consecutive CSV rows or chat-log lines."""

    id: str
    line: int
    turns: list[Turn] = dataclass_field(default_factory=list)
    meta: dict[str, str] = dataclass_field(default_factory=dict)
    messages: int = 0
    problem: tuple[int, str | None, str] | None = None

    def fail(self, line: int, field_name: str | None, reason: str) -> None:
        """Mark the conversation rejected; the first problem is the one reported."""
        if self.problem is None:
            self.problem = (line, field_name, reason)


class LineLookup(Protocol):
    """What the reader asks of a resume memo (`pipeline.grading.resume.LineMemo`)."""

    def lookup(self, line: bytes, source: str) -> str | None: ...


@dataclass(frozen=True)
class ReadContext:
    """One run's reading, as every format reader sees it: the speaker options, the zone of naive times, the
    resume memo (JSON Lines only) and every conversation id seen so far."""

    shop_speakers: frozenset[str]
    bot_speakers: frozenset[str]
    shop_prefixes: tuple[str, ...]
    default_tz: tzinfo
    memo: LineLookup | None
    ids: RunIds

    def time(self, value: object, field_name: str) -> datetime:
        """A turn's timestamp, naive times read in `default_tz`."""
        return field_time(value, field_name, self.default_tz)

    def finish(
        self, pending: Pending, file: SourceFile, *, id_field: str | None, split_hint: bool
    ) -> Transcript | Reject:
        """The Transcript of a conversation collected from CSV rows or chat-log lines, or its Reject."""
        duplicate = self.ids.check_new(pending.id, file.source, file.number, pending.line, id_field=id_field,
                                        split_hint=split_hint)
        if duplicate is not None:
            return duplicate
        if pending.problem is not None:
            line, field_name, reason = pending.problem
            return Reject(file=file.source, line=line, transcript_id=pending.id, field=field_name,
                          reason=reason)
        if not pending.turns:
            reason = "every message has empty text" if pending.messages else "the conversation has no message"
            return Reject(file=file.source, line=pending.line, transcript_id=pending.id, reason=reason)
        return Transcript(id=pending.id, turns=pending.turns, source=f"{file.source}:{pending.line}",
                          **pending.meta)


FormatReader = Callable[[Iterable[bytes], SourceFile, ReadContext], Iterator[Transcript | Reject | Finished]]
"""A format's reader: one file's byte lines in, its conversations and rejects out, in order. A generator, so
that the encoding check (which may reject the file) runs inside the caller's handler."""
