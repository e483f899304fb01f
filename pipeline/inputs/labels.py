"""Human labels: the Label/LabelSet models and the CSV reader that checks them against a rubric.

Two CSV layouts are accepted, told apart by the header:

- long: `transcript_id, criterion_id, score, rater_id[, labelled_at]`, one score per line;
- wide: `transcript_id, rater_id[, labelled_at]` and one column per criterion id, one rater's
  scores of one transcript per line. A blank cell means "not labelled", not an error.

Labels saved in the review workbench (`kefu review`) live in the run folder's store; `read_label_source`
reads a run folder as it reads a CSV, with the same checks (the store's row id stands for the line).

Files come from QA teams' spreadsheets, so UTF-8 (with or without BOM) and GBK are both read.
A bad line never stops the import: it becomes a Reject naming file, line and reason, and the rest
is used. labelled_at takes the same forms as chat timestamps (`pipeline.inputs.times.parse_time`); one
without a zone is Beijing time unless the caller says otherwise, and all are stored in UTC.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
from collections.abc import Collection, Iterator
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipeline.errors import InputError
from pipeline.inputs.times import SHANGHAI, parse_time
from pipeline.models.transcript import Reject
from pipeline.oserrors import os_problem
from pipeline.rubric.model import Criterion, Rubric
from pipeline.store.store import DB_NAME, Store

_LONG = ("transcript_id", "criterion_id", "score", "rater_id")
_WIDE = ("transcript_id", "rater_id")
_OPTIONAL = ("labelled_at",)


class Label(BaseModel):
    """One human score of one criterion of one transcript."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transcript_id: str = Field(min_length=1, description="The conversation the score is for.")
    criterion_id: str = Field(min_length=1, description="The rubric criterion, by id.")
    score: int = Field(description="Points given; one of the criterion's level points.")
    rater_id: str = Field(min_length=1, description="Who gave the score.")
    labelled_at: datetime | None = Field(
        default=None, description="When the score was given, in UTC, if known."
    )

    @field_validator("labelled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("labelled_at must be timezone-aware")
        return None if value is None else value.astimezone(UTC)


class RatingMatrix(NamedTuple):
    """Scores of one criterion laid out for the agreement statistics."""

    units: list[str]
    """Transcript ids, one per row, sorted."""
    raters: list[str]
    """Rater ids, one per column, sorted."""
    scores: npt.NDArray[np.float64]
    """units × raters, NaN where that rater did not score that transcript."""


class LabelSet(BaseModel):
    """The labels read from one file, and the lines that were rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    labels: list[Label] = Field(description="Every label that passed the checks.")
    rejects: list[Reject] = Field(
        default_factory=list, description="Every line or cell that did not, and why."
    )

    def raters(self) -> list[str]:
        """Rater ids, sorted."""
        return sorted({label.rater_id for label in self.labels})

    def transcripts(self) -> list[str]:
        """Transcript ids with at least one label, sorted."""
        return sorted({label.transcript_id for label in self.labels})

    def matrix(self, criterion_id: str) -> RatingMatrix:
        """The criterion's scores as units × raters, only transcripts and raters that have one."""
        chosen = [label for label in self.labels if label.criterion_id == criterion_id]
        units = sorted({label.transcript_id for label in chosen})
        raters = sorted({label.rater_id for label in chosen})
        row = {u: i for i, u in enumerate(units)}
        col = {r: j for j, r in enumerate(raters)}
        scores = np.full((len(units), len(raters)), np.nan)
        for label in chosen:
            scores[row[label.transcript_id], col[label.rater_id]] = label.score
        return RatingMatrix(units, raters, scores)


def _decode(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), f"无法读取标注文件 (cannot read the labels)：{os_problem(exc)}") from None
    for encoding in ("utf-8-sig", "gb18030"):  # gb18030 reads every GBK file
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    utf16 = "：它是 UTF-16（Excel 的“Unicode 文本”），请另存为“CSV UTF-8” (it is UTF-16: save it as CSV UTF-8)"
    raise InputError(str(path), "标注文件不是 UTF-8 或 GBK 文本 (neither UTF-8 nor GBK text)"
                     + (utf16 if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) else ""))


def _records(text: str) -> Iterator[tuple[int, list[str] | str]]:
    """CSV records with the line each starts on (a quoted cell may span lines), or why a record is unreadable
    (a cell over the csv module's size limit); reading goes on after it."""
    reader = csv.reader(io.StringIO(text, newline=""))
    start = 1
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield start, f"malformed CSV row: {exc}"
        else:
            yield start, [cell.strip() for cell in record]
        start = reader.line_num + 1


def _score(raw: str, criterion: Criterion) -> int | str:
    """The score as an int, or the reason it is not one of the criterion's levels."""
    try:
        value = float(raw)
    except ValueError:
        return f"score {raw!r} is not a number"
    points = criterion.points
    if not math.isfinite(value) or value != int(value) or int(value) not in points:
        return f"score {raw} is not a level of {criterion.id} (allowed: {', '.join(map(str, points))})"
    return int(value)


def _time(raw: str, default_tz: tzinfo) -> datetime | str | None:
    """The time in UTC, None when blank, or the reason it cannot be read."""
    if not raw:
        return None
    try:
        return parse_time(raw, default_tz).astimezone(UTC)
    except ValueError as exc:
        return f"labelled_at: {exc}"


class _Row(NamedTuple):
    transcript_id: str
    rater_id: str
    labelled_at: datetime | None


class _Reader:
    """State of one import: the rubric, what was seen, and the rejects so far."""

    def __init__(self, path: Path, rubric: Rubric, known: Collection[str] | None, default_tz: tzinfo) -> None:
        self.file = str(path)
        self.criteria = {c.id: c for c in rubric.criteria()}
        self.rubric_id = rubric.id
        self.known = None if known is None else set(known)
        self.default_tz = default_tz
        self.seen: dict[tuple[str, str, str], int] = {}
        self.labels: list[Label] = []
        self.rejects: list[Reject] = []

    def reject(
        self, line: int, reason: str, transcript_id: str | None = None, field: str | None = None
    ) -> None:
        self.rejects.append(
            Reject(file=self.file, line=line, transcript_id=transcript_id or None, field=field, reason=reason)
        )

    def check_row(self, line: int, cells: dict[str, str], required: tuple[str, ...]) -> _Row | None:
        """Checks shared by both layouts; None when the row was rejected."""
        transcript_id = cells.get("transcript_id", "")
        for name in required:
            if not cells.get(name):
                self.reject(line, f"missing {name}", transcript_id, name)
                return None
        if self.known is not None and transcript_id not in self.known:
            self.reject(line, f"unknown transcript {transcript_id!r}", transcript_id, "transcript_id")
            return None
        labelled_at = _time(cells.get("labelled_at", ""), self.default_tz)
        if isinstance(labelled_at, str):
            self.reject(line, labelled_at, transcript_id, "labelled_at")
            return None
        return _Row(transcript_id, cells["rater_id"], labelled_at)

    def add(self, line: int, row: _Row, criterion_id: str, raw: str) -> None:
        """Check one score and keep it, or reject it."""
        transcript_id, rater_id = row.transcript_id, row.rater_id
        criterion = self.criteria.get(criterion_id)
        if criterion is None:
            self.reject(
                line,
                f"unknown criterion {criterion_id!r} in rubric {self.rubric_id}",
                transcript_id,
                "criterion_id",
            )
            return
        score = _score(raw, criterion)
        if isinstance(score, str):
            self.reject(line, score, transcript_id, criterion_id)
            return
        key = (rater_id, transcript_id, criterion_id)
        if key in self.seen:
            self.reject(
                line,
                f"duplicate: {rater_id} already scored {criterion_id} of this transcript "
                f"on line {self.seen[key]}; the first score is kept",
                transcript_id,
                criterion_id,
            )
            return
        self.seen[key] = line
        self.labels.append(
            Label(
                transcript_id=transcript_id,
                criterion_id=criterion_id,
                score=score,
                rater_id=rater_id,
                labelled_at=row.labelled_at,
            )
        )


def read_labels(
    path: Path,
    rubric: Rubric,
    *,
    known_transcripts: Collection[str] | None = None,
    default_tz: tzinfo = SHANGHAI,
) -> LabelSet:
    """Read a long or wide label CSV, keeping every valid score and rejecting the rest with a reason.

    Rejected: an unknown criterion, a score that is not one of the criterion's level points, a
    transcript not in `known_transcripts` (when given), a second score for the same rater,
    transcript and criterion (the first one is kept), a missing field, an unreadable labelled_at.
    A header column that is neither a known field nor (wide) a criterion id is rejected on line 1 and
    ignored. A row shorter than the header has blanks for its missing last cells; one longer is rejected
    unless its extra cells are blank. Raises InputError when the file cannot be read or its header fits neither layout.
    """
    records = _records(_decode(path))
    first = next(records, None)
    if first is None:
        raise InputError(str(path), "empty file: expected a header line")
    if isinstance(first[1], str):
        raise InputError(str(path), f"the header line is unreadable: {first[1]}")
    header = [cell.lower() for cell in first[1]]
    duplicated = sorted({h for h in header if header.count(h) > 1 and h})
    if duplicated:
        raise InputError(str(path), f"header repeats column(s) {', '.join(duplicated)}")
    reader = _Reader(path, rubric, known_transcripts, default_tz)
    if all(name in header for name in _LONG):
        wide = False
        known_columns = set(_LONG + _OPTIONAL)
    elif all(name in header for name in _WIDE) and "score" not in header:
        wide = True
        known_columns = set(_WIDE + _OPTIONAL) | set(reader.criteria)
    else:
        raise InputError(
            str(path),
            "header fits neither layout: long needs transcript_id, criterion_id, score, rater_id; "
            "wide needs transcript_id, rater_id and one column per criterion id",
        )
    for name in header:
        if name not in known_columns:
            what = f"not a criterion of rubric {rubric.id}" if wide else "not a column of the long layout"
            reader.reject(1, f"column {name!r} is {what}; ignored", field=name or None)

    for line, record in records:
        if isinstance(record, str):
            reader.reject(line, record)
            continue
        if not any(record):
            continue
        if any(record[len(header):]):
            reader.reject(line, f"{len(record)} cells but the header has {len(header)}")
            continue
        # Excel leaves out a row's trailing empty cells in some rows of a CSV it saves: they are blank cells
        # (not labelled, or a missing field the checks name), not a broken row.
        record = record[:len(header)] + [""] * (len(header) - len(record))
        cells = dict(zip(header, record, strict=True))
        row = reader.check_row(line, cells, _WIDE if wide else _LONG)
        if row is None:
            continue
        if wide:
            for criterion_id in header:
                if criterion_id in reader.criteria and cells[criterion_id]:
                    reader.add(line, row, criterion_id, cells[criterion_id])
        else:
            reader.add(line, row, cells["criterion_id"], cells["score"])
    return LabelSet(labels=reader.labels, rejects=reader.rejects)


def read_label_source(
    path: Path,
    rubric: Rubric,
    *,
    known_transcripts: Collection[str] | None = None,
) -> LabelSet:
    """Labels from a CSV file (`read_labels`) or from a run folder's store (the workbench's labels).

    A run folder's labels are checked as a file's are, so a rubric changed since they were saved
    turns them into rejects rather than into wrong statistics. Raises InputError for a folder
    without a store.
    """
    if not path.is_dir():
        return read_labels(path, rubric, known_transcripts=known_transcripts)
    if not (path / DB_NAME).is_file():
        raise InputError(str(path), f"a folder, but not a run folder: no {DB_NAME} in it")
    reader = _Reader(path / DB_NAME, rubric, known_transcripts, UTC)
    with Store.open(path) as store:
        rows = store.labels()
    for row in rows:
        cells = {"transcript_id": row.transcript_id, "rater_id": row.rater_id, "labelled_at": row.labelled_at}
        checked = reader.check_row(row.id, cells, _WIDE)
        if checked is not None:
            reader.add(row.id, checked, row.criterion_id, str(row.score))
    return LabelSet(labels=reader.labels, rejects=reader.rejects)
