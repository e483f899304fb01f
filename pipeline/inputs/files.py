"""Input files: which files a run reads (directories expanded), of which format, and their byte lines."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO, Literal, NamedTuple

from pipeline.errors import InputError
from pipeline.inputs.decoding import SNIFF_BYTES
from pipeline.inputs.limits import MAX_LINE_BYTES
from pipeline.oserrors import os_problem

InputFormat = Literal["jsonl", "csv", "chatlog"]

FORMAT_BY_SUFFIX: Mapping[str, InputFormat] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".txt": "chatlog", ".log": "chatlog",
}
"""The file kinds the readers take, by lower-cased extension (.json is read as JSON Lines)."""


KINDS = ", ".join(FORMAT_BY_SUFFIX)


def input_size(paths: Sequence[Path]) -> int:
    """Bytes of every file the readers would read from `paths`, directories expanded as they expand them."""
    return sum(found.path.stat().st_size for found in input_files(paths) if found.problem is None)


def count_jsonl_lines(paths: Sequence[Path]) -> int | None:
    """The non-blank lines of the inputs, a cheap total for a progress bar when every input is JSON Lines.

    None when some input is CSV or a chat log (a conversation spans lines there). Directories expand as
    the readers expand them, and a missing input raises the readers' InputError.
    """
    files = [found for found in input_files(paths) if found.fmt is not None and found.problem is None]
    if not files or any(found.fmt != "jsonl" for found in files):
        return None
    total = 0
    for found in files:
        with found.path.open("rb") as fh:
            total += sum(1 for line in bounded_lines(fh) if not line.isspace())
    return total


class InputFile(NamedTuple):
    """One input file: its format (None: not a transcript file) and, if it is not a file that can be read,
    why."""

    path: Path
    fmt: InputFormat | None
    problem: str | None = None


def input_files(paths: Sequence[Path]) -> list[InputFile]:
    """Expand directories (recursively, sorted, hidden entries skipped) and drop repeats of one file.

    Inside a directory, an entry that is not a regular file (a dangling or looping link, a link to a
    folder, a FIFO, a socket, a device) is kept with its problem, to become a reject line: opening a
    FIFO would wait for a writer forever, and skipping it quietly would hide the chats it stood for.
    So is a sub-folder that cannot be listed (no permission, or gone while the walk ran).
    """
    found: list[InputFile] = []
    for path in paths:
        if path.is_dir():
            found.extend(sorted(_folder_entries(path), key=attrgetter("path")))
        elif path.exists():
            fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
            if fmt is None:
                raise InputError(display(path), f"unknown kind of file {path.suffix!r}; expected {KINDS}")
            found.append(InputFile(path, fmt, _not_a_file(path)))
        else:
            raise InputError(display(path), (path.is_symlink() and _not_a_file(path))
                             or "找不到这个对话文件或文件夹 (looked for transcripts here: not found)")
    unique: dict[Path, InputFile] = {}
    for entry in found:
        unique.setdefault(entry.path if entry.problem else entry.path.resolve(), entry)
    return list(unique.values())


def _folder_entries(folder: Path) -> Iterator[InputFile]:
    """Every entry under `folder` that is not a real sub-folder, and every sub-folder that cannot be listed.

    `os.walk` does not follow links to folders but lists them; its `onerror` receives each folder it
    cannot list, which `Path.rglob` would skip without a word.
    """
    unlisted: list[OSError] = []
    for top, folders, files in os.walk(folder, onerror=unlisted.append):
        here = Path(top)
        folders[:] = [name for name in folders if not name.startswith(".")]
        links = [name for name in folders if os.path.islink(here / name)]  # False, not raised, on any error
        for name in [*files, *links]:
            if not name.startswith("."):
                entry = here / name
                yield InputFile(entry, FORMAT_BY_SUFFIX.get(entry.suffix.lower()), _not_a_file(entry))
    for error in unlisted:
        yield InputFile(Path(error.filename), None, _unlisted(error))


def _unlisted(error: OSError) -> str:
    """Why a sub-folder's chats were not read, for its reject line."""
    gone = "（读取时已被移走或删除 (moved or deleted during the walk)）" if error.errno == errno.ENOENT else ""
    return (f"无法读取这个文件夹 (cannot list the folder)：{os_problem(error)}{gone}；"
            "其中的对话都没有读 (no chat in it was read)")


def _not_a_file(path: Path) -> str | None:
    """Why `path` is not a regular file the readers can open, or None if it is one."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "not read: a symbolic link that loops back on itself"
        if os.path.islink(path):
            return f"not read: a symbolic link to {display(Path(os.readlink(path)))}, which does not exist"
        return f"无法读取这个文件 (cannot read the file)：{os_problem(exc)}"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "not read: a link to a folder is not followed (name the folder itself to read it)"
    kind = "a named pipe (FIFO)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return f"not read: {kind}, not a regular file"


def bounded_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's lines, except that one over MAX_LINE_BYTES comes out cut to MAX_LINE_BYTES + 1 bytes (the
    readers reject it): a file without line breaks is never held in memory whole."""
    while line := stream.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := stream.readline(SNIFF_BYTES)) and not rest.endswith(b"\n"):
                pass
        yield line


def display(path: Path) -> str:
    """`path` as text that can be stored and printed: bytes of a name that is not UTF-8 are shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
