"""Chat text for the workbench: the store keeps no text, so a chat is read back from the input line it names.

A stored transcript's `source` is `file:line`. A JSONL file is indexed once (the byte offset of every
line, 8 bytes a line), so opening any chat of a 100,000-line file reads one line; a CSV or chat-log
file is read whole once and its chats kept. A relative file name is looked up from the working
directory, then from the run folder's parent (where `kefu grade` usually ran).
"""

from __future__ import annotations

import threading
from array import array
from pathlib import Path

from pipeline.inputs.files import FORMAT_BY_SUFFIX
from pipeline.inputs.transcripts import TranscriptReader, read_transcripts
from pipeline.models.transcript import Transcript


class ChatSource:
    """Reads chats back from the input files of one run folder, caching what makes the next read cheap."""

    def __init__(self, run_folder: Path) -> None:
        self.run_folder = run_folder
        self._lock = threading.Lock()
        self._offsets: dict[Path, array[int]] = {}
        self._whole: dict[Path, dict[str, Transcript]] = {}

    def transcript(self, transcript_id: str, source: str | None) -> Transcript | None:
        """The chat as its input file holds it now, or None when the file or the chat is gone."""
        if not source:
            return None
        name, _, line = source.rpartition(":")
        path = self._locate(name)
        if path is None or not line.isdigit():
            return None
        fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
        if fmt == "jsonl":
            chat = self._jsonl_line(path, int(line))
            return chat if chat is not None and chat.id == transcript_id else None
        with self._lock:
            if path not in self._whole:
                self._whole[path] = {t.id: t for t in read_transcripts([path]) if isinstance(t, Transcript)}
            return self._whole[path].get(transcript_id)

    def _locate(self, name: str) -> Path | None:
        path = Path(name)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path, self.run_folder.parent / path]
        return next((p for p in candidates if p.is_file()), None)

    def _jsonl_line(self, path: Path, number: int) -> Transcript | None:
        with self._lock:
            offsets = self._offsets.get(path)
            if offsets is None:
                offsets = self._offsets[path] = _line_offsets(path)
        if not 1 <= number <= len(offsets):
            return None
        with path.open("rb") as fh:
            fh.seek(offsets[number - 1])
            raw = fh.readline()
        items = TranscriptReader().read_lines([raw], source=str(path), fmt="jsonl")
        return next((t for t in items if isinstance(t, Transcript)), None)


def _line_offsets(path: Path) -> array[int]:
    """The byte offset where each line of the file starts."""
    offsets = array("q")
    position = 0
    with path.open("rb") as fh:
        for raw in fh:
            offsets.append(position)
            position += len(raw)
    return offsets
