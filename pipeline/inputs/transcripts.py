"""Reading transcripts: the entry points that stream a run's input files through the format readers.

Readers stream: they yield one Transcript or one Reject at a time and never hold a whole file;
the only state that grows is the duplicate check, about 20 bytes per conversation id, so a 10^7-chat
export fits in memory. Bad input never stops a run: it becomes a Reject naming the file, line,
transcript id, field and a reason a person understands. The formats are documented, with examples,
in eval_sets/README.md ("Input formats"); each has its module in `pipeline.inputs.formats`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import cast

from pipeline.errors import ConfigError
from pipeline.inputs.decoding import LineDecoder
from pipeline.inputs.files import KINDS, InputFile, InputFormat, bounded_lines, display, input_files
from pipeline.inputs.formats import READERS
from pipeline.inputs.formats.base import LineLookup, ReadContext, SourceFile
from pipeline.inputs.ids import RunIds
from pipeline.inputs.problems import FileRejected
from pipeline.inputs.times import SHANGHAI
from pipeline.models.transcript import Finished, Reject, Transcript
from pipeline.oserrors import os_problem


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
    files = input_files(paths)
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
    return reader.read_files(input_files(paths))


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
        self.context = ReadContext(
            shop_speakers=frozenset(_names(shop_speakers, "shop_speakers")),
            bot_speakers=frozenset(_names(bot_speakers, "bot_speakers")),
            shop_prefixes=tuple(_names(shop_prefixes, "shop_prefixes")),
            default_tz=default_tz, memo=memo, ids=RunIds(),
        )

    def read_files(self, files: Iterable[InputFile]) -> Iterator[Transcript | Reject | Finished]:
        """Read files one after another; a file of no known format, or that is not a file, is reported, not read."""
        for path, fmt, problem in files:
            if problem is not None:
                yield Reject(file=display(path), reason=problem)
            elif fmt is None:
                yield Reject(file=display(path), reason=f"not read: {path.suffix or 'no extension'} is not a "
                                                        f"transcript file (expected {KINDS})")
            else:
                yield from self.read_file(path, fmt)

    def read_file(self, path: Path, fmt: InputFormat) -> Iterator[Transcript | Reject | Finished]:
        """Read one file; a file that cannot be opened or read becomes a Reject."""
        try:
            with path.open("rb") as stream:
                yield from self.read_lines(bounded_lines(stream), source=display(path), fmt=fmt)
        except OSError as exc:
            yield Reject(file=display(path), reason=f"无法读取这个文件 (cannot read the file)：{os_problem(exc)}")

    def read_lines(
        self, lines: Iterable[bytes], *, source: str, fmt: InputFormat
    ) -> Iterator[Transcript | Reject | Finished]:
        """Read one file's byte lines (a binary file object is such an iterable) in format `fmt`."""
        file = SourceFile(source, self.context.ids.add_file(source), LineDecoder(source))
        produced = False
        try:
            for item in READERS[fmt](lines, file, self.context):
                produced = True
                yield item
        except FileRejected as exc:
            produced = True
            yield exc.reject
        if not produced:
            yield Reject(file=source, reason="no conversations found: the file is empty or only a header")


def _names(names: Collection[str], option: str) -> Collection[str]:
    """`names`, unless it is one string: its characters would silently become the nicknames."""
    if isinstance(names, str):
        raise ConfigError(f"{option} must be a list of nicknames, not the single string {names!r}")
    return names
