"""Transcripts: the Transcript/Turn models, the readers for JSONL, long CSV and chat-log text, and rejects.

Readers stream: they yield one Transcript or one Reject at a time and never hold a whole file;
the only state that grows is the duplicate check, about 20 bytes per conversation id, so a 10^7-chat
export fits in memory. Bad input never stops a run: it becomes a Reject naming the file, line,
transcript id, field and a reason a person understands. The formats are documented, with examples,
in eval_sets/README.md ("Input formats").
"""

from __future__ import annotations

import codecs
import csv
import errno
import itertools
import json
import os
import re
import stat
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, tzinfo
from enum import StrEnum
from hashlib import blake2b
from pathlib import Path
from typing import Any, BinaryIO, Literal, NamedTuple, Protocol, cast
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError, InputError
from pipeline.inputs.limits import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    id_problem,
    json_too_deep,
    label_problem,
    lone_surrogate,
)


class Role(StrEnum):
    """Who wrote a turn. `bot` covers auto-replies and robots; `system` covers platform notices."""

    customer = "customer"
    agent = "agent"
    bot = "bot"
    system = "system"


class Turn(BaseModel):
    """One message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(description="Who wrote it.")
    text: str = Field(description="The message text, as exported.")
    time: datetime | None = Field(default=None, description="When it was sent; timezone-aware where known.")
    speaker: str | None = Field(default=None, description="The nickname in the export, if any.")


class Transcript(BaseModel):
    """One conversation between a customer and a shop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Conversation id, unique within a run.")
    turns: list[Turn] = Field(min_length=1, description="The messages in order.")
    platform: str | None = Field(default=None, description="taobao, tmall, douyin, xiaohongshu, …")
    shop: str | None = Field(default=None, description="The shop's name or id.")
    agent_id: str | None = Field(default=None, description="The agent who handled the chat.")
    satisfaction: int | None = Field(
        default=None, ge=1, le=5, description="The customer's 1–5 star rating of the session, if exported (满意度)."
    )
    source: str | None = Field(default=None, description="file:line where the conversation starts.")


class Reject(BaseModel):
    """An input that was not graded, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="The input file.")
    line: int | None = Field(default=None, description="1-based line number (the first line, for a span).")
    transcript_id: str | None = Field(default=None, description="The conversation id, when it could be read.")
    field: str | None = Field(
        default=None, description="The offending field or column, when one is to blame."
    )
    reason: str = Field(description="What is wrong, in words a QA lead understands.")


class Finished(NamedTuple):
    """A JSON line the run has already graded in full (see `pipeline.grading.resume`): skipped, not parsed."""

    id: str
    source: str


class LineLookup(Protocol):
    """What the reader asks of a resume memo (`pipeline.grading.resume.LineMemo`)."""

    def lookup(self, line: bytes, source: str) -> str | None: ...


# --- timestamps ----------------------------------------------------------------------------------

SHANGHAI: tzinfo = ZoneInfo("Asia/Shanghai")
"""The default zone for naive times: the platforms export Beijing time without an offset."""

TIME_FORMS = "ISO-8601, YYYY-MM-DD HH:MM:SS, YYYY/MM/DD HH:MM:SS, or epoch seconds/milliseconds"

# 10^11 seconds is the year 5138 and 10^11 milliseconds is 1973, so every plausible chat time
# falls clearly on one side.
_EPOCH_MS_FROM = 10**11
_EPOCH_STRING = re.compile(r"\d{10}(?:\d{3})?(?:\.\d+)?")
_LOOSE_TIME = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
)
# Years outside this range are a unit mix-up or a zero timestamp, not a real chat.
_PLAUSIBLE_YEARS = range(2000, 2100)


def parse_time(value: str | int | float, default_tz: tzinfo = SHANGHAI) -> datetime:
    """Read one timestamp in any of TIME_FORMS; naive times get `default_tz`; the result is aware.

    An explicit offset is kept as given (not converted to UTC) so that prompts show the shop's
    local time. Raises ValueError with a message that quotes the value.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            parsed = _from_epoch(value, default_tz)
        elif _EPOCH_STRING.fullmatch(text := value.strip()):
            parsed = _from_epoch(float(text), default_tz)
        else:
            parsed = _from_calendar(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=default_tz)
    except (TypeError, ValueError, OverflowError, OSError):
        raise ValueError(f"bad timestamp {_shown(value)} (expected {TIME_FORMS})") from None
    if parsed.year not in _PLAUSIBLE_YEARS:
        raise ValueError(f"bad timestamp {_shown(value)}: the year {parsed.year} is not plausible for a chat")
    return parsed


def _from_epoch(value: float, tz: tzinfo) -> datetime:
    seconds = value / 1000 if abs(value) >= _EPOCH_MS_FROM else value
    return datetime.fromtimestamp(seconds, tz=tz)


def _from_calendar(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        match = _LOOSE_TIME.fullmatch(text)  # slashes, or unpadded 2026-3-2
        if match is None:
            raise
        year, month, day, hour, minute, second, fraction = match.groups()
        return datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )


# --- token estimate ------------------------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A conservative token count for budgeting, without a tokenizer download.

    Every non-ASCII character (CJK, full-width punctuation, emoji) counts as one token, which is at
    or above what Qwen and o200k tokenizers spend on common Chinese; ASCII counts one token per three
    characters (English averages about four), rounded up. Rare characters and emoji can take more.
    """
    ascii_chars = len(text.encode("ascii", "ignore"))
    return len(text) - ascii_chars + -(-ascii_chars // 3)


# --- rejects -------------------------------------------------------------------------------------


def write_rejects(rejects: Iterable[Reject], path: Path) -> int:
    """Append rejects to a JSONL file (Chinese kept readable); returns how many were written."""
    written = 0
    with path.open("a", encoding="utf-8") as out:
        for reject in rejects:
            out.write(json.dumps(reject.model_dump(), ensure_ascii=False) + "\n")
            written += 1
    return written


# --- roles and speakers --------------------------------------------------------------------------

ROLE_SYNONYMS: Mapping[str, Role] = {
    **dict.fromkeys(["customer", "user", "buyer", "客户", "顾客", "买家", "用户"], Role.customer),
    **dict.fromkeys(["agent", "seller", "assistant", "staff", "客服", "卖家", "商家"], Role.agent),
    **dict.fromkeys(["bot", "robot", "auto", "机器人", "自动回复"], Role.bot),
    **dict.fromkeys(["system", "系统"], Role.system),
}
"""Accepted spellings of `role` in JSONL and CSV, lower-cased; anything else is rejected."""

BOT_MARKERS = ("[自动回复]", "【自动回复】", "(自动回复)", "（自动回复）", "[机器人]", "【机器人】")
"""In a chat log, a message whose text starts with (or whose speaker contains) one of these is a bot's."""

SYSTEM_SPEAKERS = frozenset({"系统", "系统消息", "system"})
"""Chat-log speakers whose messages are platform notices."""


def role_of(value: str) -> Role | None:
    """The Role a JSONL/CSV role spelling stands for, or None if it is not one of ROLE_SYNONYMS."""
    return ROLE_SYNONYMS.get(value) or ROLE_SYNONYMS.get(value.strip().lower())


def _unknown_role(value: object) -> str:
    return (f"unknown role {_shown(value)} (use customer/agent/bot/system or a synonym such as "
            "客户/客服/机器人/系统; see eval_sets/README.md)")


# --- input files ---------------------------------------------------------------------------------

InputFormat = Literal["jsonl", "csv", "chatlog"]

FORMAT_BY_SUFFIX: Mapping[str, InputFormat] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "chatlog", ".log": "chatlog",
}
"""The file kinds the readers take, by lower-cased extension (.json is read as JSON Lines)."""

SNIFF_BYTES = 64 * 1024
"""How far a reader looks ahead to decide a file's encoding; otherwise it reads one line at a time."""


def read_transcripts(
    paths: Sequence[Path],
    *,
    shop_speakers: Collection[str] = (),
    bot_speakers: Collection[str] = (),
    shop_prefixes: Sequence[str] = (),
    default_tz: tzinfo = SHANGHAI,
) -> Iterator[Transcript | Reject]:
    """Stream every conversation in `paths` (files or directories) as a Transcript or a Reject.

    Paths are checked now, so a typo fails before any grading: a path that does not exist, or a
    named file of an unknown kind, raises InputError. Everything wrong inside a file is a Reject.
    `shop_speakers`, `shop_prefixes` and `bot_speakers` only matter for chat-log text, where
    nicknames stand in for roles.
    """
    files = _input_files(paths)
    reader = TranscriptReader(shop_speakers=shop_speakers, bot_speakers=bot_speakers,
                              shop_prefixes=shop_prefixes, default_tz=default_tz)
    # Without a memo the reader never yields Finished.
    return cast(Iterator[Transcript | Reject], reader.read_files(files))


def read_unfinished(
    paths: Sequence[Path],
    memo: LineLookup,
    *,
    shop_speakers: Collection[str] = (),
    bot_speakers: Collection[str] = (),
    shop_prefixes: Sequence[str] = (),
    default_tz: tzinfo = SHANGHAI,
) -> Iterator[Transcript | Reject | Finished]:
    """`read_transcripts`, except that a JSON line `memo` knows as finished comes out as Finished, unparsed."""
    reader = TranscriptReader(shop_speakers=shop_speakers, bot_speakers=bot_speakers,
                              shop_prefixes=shop_prefixes, default_tz=default_tz, memo=memo)
    return reader.read_files(_input_files(paths))


def input_size(paths: Sequence[Path]) -> int:
    """Bytes of every file the readers would read from `paths`, directories expanded as they expand them."""
    return sum(found.path.stat().st_size for found in _input_files(paths) if found.problem is None)


def count_jsonl_lines(paths: Sequence[Path]) -> int | None:
    """The non-blank lines of the inputs, a cheap total for a progress bar when every input is JSON Lines.

    None when some input is CSV or a chat log (a conversation spans lines there). Directories expand as
    the readers expand them, and a missing input raises the readers' InputError.
    """
    files = [found for found in _input_files(paths) if found.fmt is not None and found.problem is None]
    if not files or any(found.fmt != "jsonl" for found in files):
        return None
    total = 0
    for found in files:
        with found.path.open("rb") as fh:
            total += sum(1 for line in _bounded_lines(fh) if not line.isspace())
    return total


class _Input(NamedTuple):
    """One input file: its format (None: not a transcript file) and, if it is not a file that can be read,
    why."""

    path: Path
    fmt: InputFormat | None
    problem: str | None = None


def _input_files(paths: Sequence[Path]) -> list[_Input]:
    """Expand directories (recursively, sorted, hidden entries skipped) and drop repeats of one file.

    Inside a directory, an entry that is not a regular file (a dangling or looping link, a link to a
    folder, a FIFO, a socket, a device) is kept with its problem, to become a reject line: opening a
    FIFO would wait for a writer forever, and skipping it quietly would hide the chats it stood for.
    """
    found: list[_Input] = []
    for path in paths:
        if path.is_dir():
            entries = sorted(
                p for p in path.rglob("*")
                if not (p.is_dir() and not p.is_symlink())
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found.extend(_Input(entry, FORMAT_BY_SUFFIX.get(entry.suffix.lower()), _not_a_file(entry))
                         for entry in entries)
        elif path.exists():
            fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
            if fmt is None:
                raise InputError(_display(path), f"unknown kind of file {path.suffix!r}; expected {_KINDS}")
            found.append(_Input(path, fmt, _not_a_file(path)))
        else:
            raise InputError(_display(path), (path.is_symlink() and _not_a_file(path))
                             or "找不到这个对话文件或文件夹 (looked for transcripts here: not found)")
    unique: dict[Path, _Input] = {}
    for entry in found:
        unique.setdefault(entry.path if entry.problem else entry.path.resolve(), entry)
    return list(unique.values())


def _not_a_file(path: Path) -> str | None:
    """Why `path` is not a regular file the readers can open, or None if it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "not read: a symbolic link that loops back on itself"
        if path.is_symlink():
            return f"not read: a symbolic link to {_display(Path(os.readlink(path)))}, which does not exist"
        return f"cannot read the file: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "not read: a link to a folder is not followed (name the folder itself to read it)"
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not read: {kind}, not a regular file"


def _bounded_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines, except that one over MAX_LINE_BYTES comes out cut to MAX_LINE_BYTES + 1 bytes (the
    readers reject it): a file without line breaks is never held in memory whole."""
    while line := stream.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(SNIFF_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield line


def _display(path: Path) -> str:
    """`path` as text that can be stored and printed: bytes of a name that is not UTF-8 are shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


_KINDS = ", ".join(FORMAT_BY_SUFFIX)


class _FileRejected(Exception):
    """The rest of a file cannot be read; carries the Reject that says why."""

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(reject.reason)


class _Line(NamedTuple):
    """One decoded line; if `decoded` is False its bytes were invalid and `text` has U+FFFD in their place."""

    number: int
    text: str
    decoded: bool


_ENCODING_NAMES = {"utf-8": "UTF-8", "gb18030": "GBK"}


class _LineDecoder:
    """Decodes a file line by line as UTF-8 or GBK (read as its superset GB18030).

    The choice is made from the non-ASCII lines in the first SNIFF_BYTES, or, if those are all
    ASCII, from the first non-ASCII line later on. Only whole lines are decoded, and both encodings
    keep the newline byte to itself, so a bad line never spoils its neighbours.
    """

    def __init__(self, source: str) -> None:
        self.source = source
        self.encoding: str | None = None
        self.too_long: set[int] = set()

    def lines(self, raw_lines: Iterable[bytes]) -> Iterator[_Line]:
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

    def decode(self, number: int, raw: bytes) -> _Line:
        """One line of this file, decoded in the file's encoding; a line over MAX_LINE_BYTES is not decoded."""
        if len(raw) > MAX_LINE_BYTES:
            self.too_long.add(number)
            return _Line(number, "\ufffd", False)
        if raw.isascii():
            return _Line(number, raw.decode("ascii"), True)
        if self.encoding is None:
            self.encoding = _choose_encoding([raw])
        try:
            return _Line(number, raw.decode(self.encoding or "utf-8"), True)
        except UnicodeDecodeError:
            return _Line(number, raw.decode(self.encoding or "utf-8", "replace"), False)

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
            raise _FileRejected(Reject(
                file=self.source, line=1,
                reason="the file contains NUL bytes: it is UTF-16 or binary, not UTF-8/GBK text "
                       "(in Excel, save as 'CSV UTF-8')",
            ))
        non_ascii = [raw for raw in head if not raw.isascii()]
        self.encoding = _choose_encoding(non_ascii)
        # One or two bad lines are not enough to condemn a file; they are rejected one by one.
        if self.encoding is None and len(non_ascii) >= _MIN_EVIDENCE_LINES:
            raise _FileRejected(Reject(
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


# --- the run's reader ----------------------------------------------------------------------------


class TranscriptReader:
    """One run's reading: the speaker options, and every conversation id seen so far.

    `read_lines` takes any iterable of byte lines, so stdin or a zip member reads like a file.
    """

    def __init__(
        self,
        *,
        shop_speakers: Collection[str] = (),
        bot_speakers: Collection[str] = (),
        shop_prefixes: Sequence[str] = (),
        default_tz: tzinfo = SHANGHAI,
        memo: LineLookup | None = None,
    ) -> None:
        self.memo = memo
        self.shop_speakers = frozenset(_names(shop_speakers, "shop_speakers"))
        self.bot_speakers = frozenset(_names(bot_speakers, "bot_speakers"))
        self.shop_prefixes = tuple(_names(shop_prefixes, "shop_prefixes"))
        self.default_tz = default_tz
        self._seen = _SeenIds()
        self._sources: list[str] = []

    def read_files(self, files: Iterable[_Input]) -> Iterator[Transcript | Reject | Finished]:
        """Read files one after another; a file of no known format, or that is not a file, is reported, not read."""
        for path, fmt, problem in files:
            if problem is not None:
                yield Reject(file=_display(path), reason=problem)
            elif fmt is None:
                yield Reject(file=_display(path), reason=f"not read: {path.suffix or 'no extension'} is not a "
                                                         f"transcript file (expected {_KINDS})")
            else:
                yield from self.read_file(path, fmt)

    def read_file(self, path: Path, fmt: InputFormat) -> Iterator[Transcript | Reject | Finished]:
        """Read one file; a file that cannot be opened or read becomes a Reject."""
        try:
            with path.open("rb") as stream:
                yield from self.read_lines(_bounded_lines(stream), source=_display(path), fmt=fmt)
        except OSError as exc:
            yield Reject(file=_display(path), reason=f"cannot read the file: {exc.strerror or exc}")

    def read_lines(
        self, lines: Iterable[bytes], *, source: str, fmt: InputFormat
    ) -> Iterator[Transcript | Reject | Finished]:
        """Read one file's byte lines (a binary file object is such an iterable) in format `fmt`."""
        file = _File(source, len(self._sources), _LineDecoder(source))
        self._sources.append(source)
        produced = False
        try:
            for item in self._read_format(lines, file, fmt):
                produced = True
                yield item
        except _FileRejected as exc:
            produced = True
            yield exc.reject
        if not produced:
            yield Reject(file=source, reason="no conversations found: the file is empty or only a header")

    def _read_format(
        self, lines: Iterable[bytes], file: _File, fmt: InputFormat
    ) -> Iterator[Transcript | Reject | Finished]:
        """The reader of `fmt`; a generator, so the encoding check (which may reject the file) runs inside
        `read_lines`' handler."""
        if fmt == "jsonl":  # undecoded: a finished line is skipped before it is decoded
            yield from self._read_jsonl(file.decoder.numbered(lines), file)
        else:
            yield from (self._read_csv if fmt == "csv" else self._read_chatlog)(file.decoder.lines(lines), file)

    # --- JSONL -----------------------------------------------------------------------------------

    def _read_jsonl(self, lines: Iterator[tuple[int, bytes]], file: _File) -> Iterator[Transcript | Reject | Finished]:
        first = True
        first_line = 0  # the first line that was read (not skipped as finished)
        for number, raw in lines:
            if self.memo is not None:  # before decoding: a finished line costs a digest and nothing else
                source = f"{file.source}:{number}"
                finished = self.memo.lookup(raw, source)
                # A finished line whose id this run has read before is parsed, to be rejected as a duplicate.
                if finished is not None and self._seen.add(finished, file.number) is None:
                    first = False
                    yield Finished(finished, source)
                    continue
            _, text, decoded = file.decoder.decode(number, raw)
            if not text or text.isspace():
                continue
            if first:
                first, first_line = False, number
                if _opens_a_document(text.strip()):
                    raise _FileRejected(Reject(file=file.source, line=number, reason=_ONE_DOCUMENT))
            obj = _parse_line(text) if decoded else _Unparsed(file.decoder.undecodable(number))
            if isinstance(obj, dict):
                yield self._transcript_from_json(obj, file, number)
            elif isinstance(obj, _Unparsed):
                yield Reject(file=file.source, line=number, reason=obj.reason)
            else:
                yield Reject(file=file.source, line=number, reason=_ONE_DOCUMENT if number == first_line
                             and isinstance(obj, list) else f"expected a JSON object (one conversation), "
                                                            f"got {_json_type(obj)}")

    def _transcript_from_json(self, obj: dict[str, Any], file: _File, number: int) -> Transcript | Reject:
        conv_id: str | None = None
        try:
            conv_id = _required_text(obj, "id", "id")
            if not conv_id.strip():
                raise _Invalid("id", "empty 'id'")
            duplicate = self._check_new(conv_id, file, number, id_field="id", split_hint=False)
            if duplicate is not None:
                return duplicate
            meta = {key: _optional_label(obj, key, key) for key in ("platform", "shop", "agent_id")}
            rating = _satisfaction(obj.get("satisfaction"))
            raw_turns = obj.get("turns")
            if raw_turns is None:
                raise _Invalid("turns", "missing field 'turns'")
            if not isinstance(raw_turns, list):
                raise _Invalid("turns", f"'turns' must be a list of messages, got {_json_type(raw_turns)}")
            if not raw_turns:
                raise _Invalid("turns", "the conversation has no turns")
            turns = [turn for i, raw in enumerate(raw_turns)
                     if (turn := self._turn_from_json(raw, i)) is not None]
            if not turns:
                raise _Invalid("turns", "every turn has empty text")
        except _Invalid as bad:
            return Reject(file=file.source, line=number, transcript_id=conv_id, field=bad.field,
                          reason=bad.reason)
        return Transcript(id=conv_id, turns=turns, source=f"{file.source}:{number}", satisfaction=rating, **meta)

    def _turn_from_json(self, raw: object, index: int) -> Turn | None:
        """The Turn, or None for a turn with empty text (images and stickers export that way)."""
        where = f"turns[{index}]"
        if not isinstance(raw, dict):
            raise _Invalid(where, f"{where} must be an object with role and text, got {_json_type(raw)}")
        role_value = raw.get("role")
        if role_value is None:
            raise _Invalid(f"{where}.role", f"missing field 'role' in {where}")
        role = role_of(role_value) if isinstance(role_value, str) else None
        if role is None:
            raise _Invalid(f"{where}.role", _unknown_role(role_value))
        text = _required_text(raw, "text", f"{where}.text")
        if not text.strip():
            return None
        time_value = raw.get("time")
        blank_time = time_value is None or (isinstance(time_value, str) and not time_value.strip())
        return Turn(
            role=role, text=text, speaker=_optional_label(raw, "speaker", f"{where}.speaker"),
            time=None if blank_time else self._time(time_value, f"{where}.time"),
        )

    # --- CSV -------------------------------------------------------------------------------------

    def _read_csv(self, lines: Iterator[_Line], file: _File) -> Iterator[Transcript | Reject]:
        undecodable: list[int] = []  # lines fed to the csv module since its last row

        def texts() -> Iterator[str]:
            for line in lines:
                if not line.decoded:
                    undecodable.append(line.number)
                yield line.text

        rows = csv.reader(texts(), strict=True)
        columns: dict[str, int] | None = None
        pending: _Pending | None = None
        end = 0
        while True:
            start = end + 1
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as exc:
                end = rows.line_num
                undecodable.clear()
                if pending is not None:
                    yield self._finish(pending, file, id_field="conversation_id", split_hint=True)
                    pending = None
                yield Reject(file=file.source, line=start, reason=_csv_error(exc, start))
                continue
            end = rows.line_num
            bad_line = undecodable[0] if undecodable else None
            undecodable.clear()
            if not any(cell.strip() for cell in row):
                continue
            if columns is None:
                columns = _csv_columns(row, file.source, start)
                continue
            cells = {name: (row[i] if i < len(row) else None) for name, i in columns.items()}
            conv_id = (cells["conversation_id"] or "").strip()
            if pending is not None and pending.id != conv_id:
                yield self._finish(pending, file, id_field="conversation_id", split_hint=True)
                pending = None
            if not conv_id:
                yield Reject(file=file.source, line=start, field="conversation_id",
                             reason="empty conversation_id")
                continue
            if pending is None:
                pending = _Pending(conv_id, start)
            pending.messages += 1
            try:
                if bad_line is not None:
                    raise _Invalid(None, file.decoder.undecodable(bad_line))
                self._add_csv_row(pending, cells)
            except _Invalid as bad:
                pending.fail(start, bad.field, bad.reason)
        if pending is not None:
            yield self._finish(pending, file, id_field="conversation_id", split_hint=True)

    def _add_csv_row(self, pending: _Pending, cells: dict[str, str | None]) -> None:
        role_cell, text = cells["role"], cells["text"]
        if role_cell is None or text is None:
            missing = "role" if role_cell is None else "text"
            raise _Invalid(missing, f"missing field '{missing}': the row has fewer cells than the header")
        role = role_of(role_cell)
        if role is None:
            raise _Invalid("role", _unknown_role(role_cell))
        for key in ("platform", "shop", "agent_id", "satisfaction"):
            if (value := (cells.get(key) or "").strip()) and key not in pending.meta:
                if key == "satisfaction":
                    value = str(_satisfaction(value))
                pending.meta[key] = _label(value, key)
        if text.strip():
            time_cell = (cells.get("time") or "").strip()
            pending.turns.append(Turn(
                role=role, text=text, speaker=_label((cells.get("speaker") or "").strip(), "speaker") or None,
                time=self._time(time_cell, "time") if time_cell else None,
            ))

    # --- chat-log text ---------------------------------------------------------------------------

    def _read_chatlog(self, lines: Iterator[_Line], file: _File) -> Iterator[Transcript | Reject]:
        pending: _Pending | None = None
        message: _Message | None = None
        unnamed = Path(file.source).stem  # the id of a conversation before any separator line
        for number, text, decoded in lines:
            stripped = text.strip()
            separator = _separator_id(stripped) if stripped and stripped[0] in "-=#" else None
            if separator is not None:
                if pending is not None:
                    yield self._finish_chatlog(pending, message, file)
                pending, message = _Pending(separator, number), None
                continue
            header = _chatlog_header(stripped)
            if header is None and (message is not None or not stripped) and decoded:
                if message is not None:
                    message.lines.append(stripped)
                continue
            if pending is None:
                pending = _Pending(unnamed, number)
            if not decoded:
                pending.fail(number, None, file.decoder.undecodable(number))
            elif header is None:
                pending.fail(number, None, f"text before the first message header: {stripped[:40]!r} "
                                           "(expected a line like '2026-03-02 10:15:03 小明: …' "
                                           "or '小明 2026-03-02 10:15:03')")
            else:
                self._add_chatlog_message(pending, message)
                speaker, time, first_text = header
                message = _Message(number, speaker, time, [first_text])
        if pending is not None:
            yield self._finish_chatlog(pending, message, file)

    def _add_chatlog_message(self, pending: _Pending, message: _Message | None) -> None:
        if message is None:
            return
        pending.messages += 1
        text = "\n".join(message.lines).strip()
        try:
            time = self._time(message.time, "time")
            speaker = _label(message.speaker, "speaker")
        except _Invalid as bad:
            pending.fail(message.line, bad.field, bad.reason)
            return
        if text:
            pending.turns.append(Turn(role=self._speaker_role(speaker, text), text=text, time=time, speaker=speaker))

    def _finish_chatlog(self, pending: _Pending, last: _Message | None, file: _File) -> Transcript | Reject:
        self._add_chatlog_message(pending, last)
        speakers = list(dict.fromkeys(turn.speaker for turn in pending.turns if turn.speaker))
        agents = {turn.speaker for turn in pending.turns if turn.role is Role.agent and turn.speaker}
        if pending.turns and not agents and all(turn.role is not Role.bot for turn in pending.turns):
            pending.fail(pending.line, "speaker",
                         f"no speaker is recognised as the shop (speakers: {', '.join(speakers[:5])}): "
                         "pass the agents' nicknames as shop speakers, or the chat was never answered")
        if len(agents) == 1:
            pending.meta["agent_id"] = next(iter(agents))
        main_accounts = {name.split(":", 1)[0] for name in agents}
        if len(main_accounts) == 1 and all(":" in name for name in agents):
            pending.meta["shop"] = next(iter(main_accounts))
        return self._finish(pending, file, id_field=None, split_hint=False)

    def _speaker_role(self, speaker: str, text: str) -> Role:
        """The role of a chat-log nickname; the rule is documented in eval_sets/README.md."""
        if (speaker in self.bot_speakers or "机器人" in speaker or text.startswith(BOT_MARKERS)
                or any(marker in speaker for marker in BOT_MARKERS)):
            return Role.bot
        if speaker in self.shop_speakers or ":" in speaker or speaker.startswith(self.shop_prefixes):
            return Role.agent
        if speaker in SYSTEM_SPEAKERS:
            return Role.system
        return Role.customer

    # --- shared ----------------------------------------------------------------------------------

    def _time(self, value: object, field_name: str) -> datetime:
        if not isinstance(value, str | int | float):
            raise _Invalid(field_name, f"bad timestamp {_shown(value)} (expected {TIME_FORMS})")
        try:
            return parse_time(value, self.default_tz)
        except ValueError as exc:
            raise _Invalid(field_name, str(exc)) from None

    def _check_new(
        self, conv_id: str, file: _File, line: int, *, id_field: str | None, split_hint: bool
    ) -> Reject | None:
        """Record `conv_id` as read; a Reject if it cannot be an id (input_limits.id_problem) or this run has
        read it before."""
        problem = id_problem(conv_id)
        if problem is not None:
            return Reject(file=file.source, line=line, transcript_id=conv_id, field=id_field, reason=problem)
        first = self._seen.add(conv_id, file.number)
        if first is None:
            return None
        if first != file.number:
            reason = f"duplicate conversation id {conv_id!r}: already read from {self._sources[first]}"
        elif split_hint:
            reason = (f"conversation split across non-adjacent rows: {conv_id!r} already appeared earlier "
                      "in this file (keep each conversation's rows together)")
        else:
            reason = f"duplicate conversation id {conv_id!r}: already read earlier in this file"
        return Reject(file=file.source, line=line, transcript_id=conv_id, field=id_field, reason=reason)

    def _finish(
        self, pending: _Pending, file: _File, *, id_field: str | None, split_hint: bool
    ) -> Transcript | Reject:
        """The Transcript of a conversation collected from CSV rows or chat-log lines, or its Reject."""
        duplicate = self._check_new(pending.id, file, pending.line, id_field=id_field, split_hint=split_hint)
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


def _names(names: Collection[str], option: str) -> Collection[str]:
    """`names`, unless it is one string: its characters would silently become the nicknames."""
    if isinstance(names, str):
        raise ConfigError(f"{option} must be a list of nicknames, not the single string {names!r}")
    return names


class _File(NamedTuple):
    source: str
    number: int
    decoder: _LineDecoder


@dataclass
class _Pending:
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


@dataclass
class _Message:
    """A chat-log message whose continuation lines are still being read."""

    line: int
    speaker: str
    time: str
    lines: list[str]


class _Invalid(Exception):
    """A problem with one field of one conversation; becomes that conversation's Reject."""

    def __init__(self, field_name: str | None, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(reason)


_ONE_DOCUMENT = ("this is one JSON document, not JSON Lines: put each conversation on a line of its own "
                 "(for an array: jq -c '.[]' in.json > out.jsonl)")


class _Unparsed(NamedTuple):
    """Why a JSON line has no value."""

    reason: str


def _parse_line(text: str) -> object:
    """The JSON value of one line, or _Unparsed with the reason (input_limits keeps the parser from failing
    in any other way)."""
    if json_too_deep(text):
        return _Unparsed(f"arrays and objects nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        # Some of the parser's messages end in "at" ("Invalid control character at").
        return _Unparsed(f"not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}")
    except ValueError:  # the parser's only other error: an integer longer than Python reads
        return _Unparsed(f"a number on this line has more than {MAX_INT_DIGITS:,} digits")


def _opens_a_document(start: str) -> bool:
    """True if a JSONL file's first line opens a JSON document spread over lines (`[`, `{`, `[{…},`).

    A first line that is a whole JSON array by itself is one bad line: the lines after it are still read.
    """
    if start in ("[", "{"):
        return True
    if not start.startswith("[") or json_too_deep(start):
        return False
    try:
        json.loads(start)
    except json.JSONDecodeError:
        return True
    except ValueError:  # a number too long: the line is whole, and _parse_line says so
        return False
    return False


def _shown(value: object) -> str:
    """`value` quoted for a reason a person reads: its repr (which escapes control characters and lone
    surrogates), shortened."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 1] + "…"


_SHOWN_CHARS = 80


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")


def _scalar_text(value: object, field_name: str) -> str | None:
    """A JSON string, or a number as text (ids are often numeric); None for anything else.

    A string holding a lone surrogate is rejected here (see pipeline.inputs.limits for why)."""
    if isinstance(value, str):
        surrogate = lone_surrogate(value)
        if surrogate is not None:
            raise _Invalid(field_name, f"not valid Unicode text: a lone surrogate {surrogate} "
                                       "(half of a UTF-16 pair, as the JSON escape spells it)")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _required_text(obj: dict[str, Any], key: str, field_name: str) -> str:
    value = obj.get(key)
    if value is None:
        raise _Invalid(field_name, f"missing field '{key}'")
    text = _scalar_text(value, field_name)
    if text is None:
        raise _Invalid(field_name, f"'{key}' must be a string, got {_json_type(value)}")
    return text


def _satisfaction(value: object) -> int | None:
    """A 1–5 star rating from JSON or a CSV cell; blank is 'not rated'."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        stars = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        stars = -1
    if not 1 <= stars <= 5:
        raise _Invalid("satisfaction", f"'satisfaction' must be a star rating from 1 to 5, got {_shown(value)}")
    return stars


def _optional_label(obj: dict[str, Any], key: str, field_name: str) -> str | None:
    """An optional one-line name (platform, shop, agent_id, speaker) of a JSON object."""
    value = obj.get(key)
    if value is None:
        return None
    text = _scalar_text(value, field_name)
    if text is None:
        raise _Invalid(field_name, f"'{key}' must be a string, got {_json_type(value)}")
    return _label(text, field_name)


def _label(value: str, field_name: str) -> str:
    """`value`, if it can be a one-line name (input_limits.label_problem)."""
    problem = label_problem(value)
    if problem is not None:
        raise _Invalid(field_name, f"'{field_name}' {problem}")
    return value


_CSV_REQUIRED = ("conversation_id", "role", "text")
_CSV_OPTIONAL = ("time", "speaker", "platform", "shop", "agent_id", "satisfaction")


def _csv_columns(header: list[str], source: str, line: int) -> dict[str, int]:
    """Map the known column names to their positions; other columns are ignored."""
    names = [cell.strip().lstrip("\ufeff").lower() for cell in header]
    for required in _CSV_REQUIRED:
        if required not in names:
            raise _FileRejected(Reject(
                file=source, line=line, field=required,
                reason=f"missing column '{required}' in the CSV header (the header has: {', '.join(names)}; "
                       f"needed: {', '.join(_CSV_REQUIRED)})",
            ))
    return {name: names.index(name) for name in (*_CSV_REQUIRED, *_CSV_OPTIONAL) if name in names}


def _csv_error(exc: csv.Error, line: int) -> str:
    if "unexpected end of data" in str(exc):
        return (f"a quote opened in the row starting on line {line} is never closed: the rest of the file "
                "was read as one cell")
    return f"malformed CSV row: {exc}"


# --- chat-log headers ----------------------------------------------------------------------------

_TIME_TEXT = r"\d{4}[-/]\d{1,2}[-/]\d{1,2}[ T]\d{1,2}:\d{2}(?::\d{2})?"
# "id" is a label unless nothing but dashes follows it: then it is the id itself (`# 会话 id`).
_SEPARATOR_START = re.compile(r"(?:[-=]{3,}|#)\s*(?:会话|conversation)\s*(?:id(?![-=\s]*$))?\s*[:：]?\s*",
                              re.IGNORECASE)
_WHITESPACE = re.compile(r"\s")


def _separator_id(line: str) -> str | None:
    """The id of a separator line (`----- 会话 c1 -----`, `# conversation: c1`), or None if `line` is not one.

    Only the start is a pattern; the id is the rest without its trailing dashes. As one pattern, a lazy id
    followed by optional dashes took time quadratic in the line's length (`#会话 x---…---y` stalled the run).
    """
    start = _SEPARATOR_START.match(line)
    if start is None:
        return None
    conv_id = line[start.end():].rstrip("-=").rstrip()
    if not conv_id or conv_id[0] in "-=" or _WHITESPACE.search(conv_id):
        return None
    return conv_id
# `2026-03-02 10:15:03 小明: 内容`. The nickname ends at a full-width colon or at a colon followed by a
# space or the line's end, so that a 旺旺 sub-account `店铺名:小美` keeps its own colon.
_TIME_FIRST = re.compile(rf"(?P<time>{_TIME_TEXT})\s+(?P<name>\S+?)(?:：|:(?=\s|$))\s*(?P<text>.*)")
_TIME_FIRST_BARE = re.compile(rf"(?P<time>{_TIME_TEXT})\s+(?P<name>[^\s:：]+)[:：](?P<text>.*)")
# `小明 2026-03-02 10:15:03` or `店铺名:小美 (2026-03-02 10:15:03):`, the text on the next lines.
# Matched as the line's tail, searched for, so that the name needs no pattern of its own: a lazy name followed
# by optional spaces took time cubic in the line's length (a line of spaces ending in ')' stalled the run).
_NAME_FIRST_TAIL = re.compile(rf"[(（]?(?P<time>{_TIME_TEXT})[)）]?\s*[:：]?\Z")


def _chatlog_header(line: str) -> tuple[str, str, str] | None:
    """(speaker, time, text on the same line) if `line` starts a message."""
    if not line:
        return None
    if line[0].isdigit():
        match = _TIME_FIRST.fullmatch(line) or _TIME_FIRST_BARE.fullmatch(line)
        if match:
            return match["name"], match["time"], match["text"]
    if line[-1].isdigit() or line[-1] in "):）：":
        match = _NAME_FIRST_TAIL.search(line)
        if match and (name := line[:match.start()].rstrip()):
            return name, match["time"], ""
    return None


# --- ids seen ------------------------------------------------------------------------------------


class _SeenIds:
    """The conversation ids of one run, as 8-byte blake2b digests in an open-addressing table.

    A Python set of id strings costs about 100 bytes an id; this table costs 12 bytes a slot at a
    load of at most 0.7 (about 200 MB for 10^7 ids), and also remembers which file each id came
    from. Two ids share a digest with probability about n²/2^64 (5·10^-6 for 10^7 ids).
    """

    _MAX_LOAD = 0.7

    def __init__(self, slots_log2: int = 16) -> None:
        # numpy (about 0.1 s to import) is loaded by the first reader, not by every `kefu` start-up.
        import numpy as np

        self._keys = np.zeros(1 << slots_log2, dtype=np.uint64)
        self._files = np.zeros(1 << slots_log2, dtype=np.uint32)
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """Memory held by the table."""
        return int(self._keys.nbytes + self._files.nbytes)

    def add(self, conv_id: str, file_number: int) -> int | None:
        """Record `conv_id` as read from file `file_number`; if it was read before, that file's number."""
        digest = blake2b(conv_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        key = int.from_bytes(digest, "little") | 1  # bit 0 set: a zero key marks an empty slot
        slot = self._slot(key)
        if self._keys[slot]:
            return int(self._files[slot])
        self._keys[slot], self._files[slot] = key, file_number
        self._count += 1
        if self._count > self._MAX_LOAD * len(self._keys):
            self._grow()
        return None

    def _slot(self, key: int) -> int:
        """Where `key` is, or the empty slot where it belongs (linear probing)."""
        keys = self._keys
        mask = len(keys) - 1
        slot = (key >> 1) & mask
        while (found := int(keys[slot])) and found != key:
            slot = (slot + 1) & mask
        return slot

    def _grow(self) -> None:
        """Double the table. Linear probing's layout is computed for all keys at once: sorted by home
        slot, each key lands at max(home, previous position + 1); the few that would run past the end
        wrap round and are placed one by one."""
        import numpy as np

        used = self._keys != 0
        keys, files = self._keys[used], self._files[used]
        size = 2 * len(self._keys)
        home = ((keys >> np.uint64(1)) & np.uint64(size - 1)).astype(np.int64)
        order = np.argsort(home, kind="stable")
        keys, files, home = keys[order], files[order], home[order]
        rank = np.arange(len(home))
        position = rank + np.maximum.accumulate(home - rank)
        fits = position < size
        self._keys = np.zeros(size, dtype=np.uint64)
        self._files = np.zeros(size, dtype=np.uint32)
        self._keys[position[fits]] = keys[fits]
        self._files[position[fits]] = files[fits]
        for key, file_number in zip(keys[~fits].tolist(), files[~fits].tolist(), strict=True):
            slot = self._slot(key)
            self._keys[slot], self._files[slot] = key, file_number
