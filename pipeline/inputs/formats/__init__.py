"""The transcript file formats, one module each, and the registry that picks a file's reader by its format."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.inputs.files import InputFormat
from pipeline.inputs.formats.base import FormatReader
from pipeline.inputs.formats.chatlog import read_chatlog
from pipeline.inputs.formats.csvlong import read_csv
from pipeline.inputs.formats.jsonl import read_jsonl

READERS: Mapping[InputFormat, FormatReader] = {"jsonl": read_jsonl, "csv": read_csv, "chatlog": read_chatlog}
"""The reader of each input format (see `pipeline.inputs.files.FORMAT_BY_SUFFIX` for which files are which)."""
