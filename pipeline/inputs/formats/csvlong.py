"""The long CSV format: one message per row, a conversation's rows together under one header."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator

from pipeline.inputs.fields import checked_label, star_rating
from pipeline.inputs.formats.base import Pending, ReadContext, SourceFile
from pipeline.inputs.problems import FileRejected, Invalid
from pipeline.inputs.roles import role_of, unknown_role
from pipeline.models.transcript import Reject, Transcript, Turn


def read_csv(raw_lines: Iterable[bytes], file: SourceFile, run: ReadContext) -> Iterator[Transcript | Reject]:
    """Read long CSV: a header, then one message per row."""
    lines = file.decoder.lines(raw_lines)
    undecodable: list[int] = []  # lines fed to the csv module since its last row

    def texts() -> Iterator[str]:
        for line in lines:
            if not line.decoded:
                undecodable.append(line.number)
            yield line.text

    rows = csv.reader(texts(), strict=True)
    columns: dict[str, int] | None = None
    pending: Pending | None = None
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
                yield run.finish(pending, file, id_field="conversation_id", split_hint=True)
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
            yield run.finish(pending, file, id_field="conversation_id", split_hint=True)
            pending = None
        if not conv_id:
            yield Reject(file=file.source, line=start, field="conversation_id",
                         reason="empty conversation_id")
            continue
        if pending is None:
            pending = Pending(conv_id, start)
        pending.messages += 1
        try:
            if bad_line is not None:
                raise Invalid(None, file.decoder.undecodable(bad_line))
            _add_csv_row(pending, cells, run)
        except Invalid as bad:
            pending.fail(start, bad.field, bad.reason)
    if pending is not None:
        yield run.finish(pending, file, id_field="conversation_id", split_hint=True)


def _add_csv_row(pending: Pending, cells: dict[str, str | None], run: ReadContext) -> None:
    role_cell, text = cells["role"], cells["text"]
    if role_cell is None or text is None:
        missing = "role" if role_cell is None else "text"
        raise Invalid(missing, f"missing field '{missing}': the row has fewer cells than the header")
    role = role_of(role_cell)
    if role is None:
        raise Invalid("role", unknown_role(role_cell))
    for key in ("platform", "shop", "agent_id", "satisfaction"):
        if (value := (cells.get(key) or "").strip()) and key not in pending.meta:
            if key == "satisfaction":
                value = str(star_rating(value))
            pending.meta[key] = checked_label(value, key)
    if text.strip():
        time_cell = (cells.get("time") or "").strip()
        pending.turns.append(Turn(
            role=role, text=text, speaker=checked_label((cells.get("speaker") or "").strip(), "speaker") or None,
            time=run.time(time_cell, "time") if time_cell else None,
        ))


_CSV_REQUIRED = ("conversation_id", "role", "text")
_CSV_OPTIONAL = ("time", "speaker", "platform", "shop", "agent_id", "satisfaction")


def _csv_columns(header: list[str], source: str, line: int) -> dict[str, int]:
    """Map the known column names to their positions; other columns are ignored, a known one twice is refused."""
    names = [cell.strip().lstrip("\ufeff").lower() for cell in header]
    for required in _CSV_REQUIRED:
        if required not in names:
            raise FileRejected(Reject(
                file=source, line=line, field=required,
                reason=f"missing column '{required}' in the CSV header (the header has: {', '.join(names)}; "
                       f"needed: {', '.join(_CSV_REQUIRED)})",
            ))
    for name in (*_CSV_REQUIRED, *_CSV_OPTIONAL):
        if names.count(name) > 1:  # reading either column would quietly drop the other's cells
            first = names.index(name)
            raise FileRejected(Reject(
                file=source, line=line, field=name,
                reason=f"column '{name}' appears twice in the CSV header (columns {first + 1} and "
                       f"{names.index(name, first + 1) + 1}): rename or remove one",
            ))
    return {name: names.index(name) for name in (*_CSV_REQUIRED, *_CSV_OPTIONAL) if name in names}


def _csv_error(exc: csv.Error, line: int) -> str:
    if "unexpected end of data" in str(exc):
        return (f"a quote opened in the row starting on line {line} is never closed: the rest of the file "
                "was read as one cell")
    return f"malformed CSV row: {exc}"
