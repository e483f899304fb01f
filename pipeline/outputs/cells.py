"""Spreadsheet cells from chat data: written so that no spreadsheet reads one as a formula.

Ids, agent names, shops, reasoning and quotes come from untrusted chats. A cell that starts with
`=`, `+`, `-` or `@` (or a tab or CR before one) is run as a formula by Excel, LibreOffice and Google
Sheets when the file is opened (`=HYPERLINK(...)`, `=WEBSERVICE(...)`, DDE). Following the OWASP
guidance on CSV injection (https://owasp.org/www-community/attacks/CSV_Injection):

- CSV: a text cell that could start a formula gets one `'` in front, which spreadsheets show as
  text. Text that already starts with `'` gets one too, so the rule reverses exactly: drop one
  leading `'` from any text cell that has one (`original_text`). Numbers are never changed: -3 is
  a number, not a formula.
- XLSX: every text cell is stored as a string (never as a formula), marked with Excel's
  quote-prefix style when it looks like one, so editing the cell in Excel keeps it text. XML
  cannot hold most control characters; each becomes U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

FORMULA_STARTS = frozenset("=+-@＝＋－＠")
"""Characters that make a spreadsheet read a cell as a formula (full-width forms included: Excel in a
CJK locale may convert them)."""
_CONTROL_STARTS = FORMULA_STARTS | frozenset("\t\r\n\0")
"""A cell starting with one of these counts as a formula whatever follows (OWASP lists tab and CR)."""
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def looks_like_formula(text: str) -> bool:
    """Whether a spreadsheet could read `text` as a formula: it starts with a formula character, or with
    blanks or control characters before one (some importers strip those)."""
    if not text:
        return False
    first = text[0]
    if first in _CONTROL_STARTS:
        return True
    if first.isprintable() and not first.isspace():
        return False
    for char in text:
        if char.isprintable() and not char.isspace():
            return char in FORMULA_STARTS
    return False


def csv_cell(value: Any) -> Any:
    """A value for a CSV cell: text that could start a formula (or starts with `'`) gets a leading `'`."""
    if value.__class__ is str and (value.startswith("'") or looks_like_formula(value)):
        return "'" + value
    return value


def csv_cells(values: Iterable[Any]) -> list[Any]:
    """`csv_cell` of each value of a row."""
    return [csv_cell(v) for v in values]


def original_text(cell: str) -> str:
    """The text a CSV cell was written from: `csv_cell` reversed."""
    return cell[1:] if cell.startswith("'") else cell


def write_xlsx(path: Path, sheets: Iterable[tuple[str, Sequence[str], Iterable[Sequence[Any]]]]) -> Path:
    """Write an xlsx book of (sheet name, header, rows) with every text cell stored as text.

    Written in openpyxl's write-only mode, which streams rows to disk; the header is bold.
    """
    from openpyxl import Workbook
    from openpyxl.styles import Font

    book = Workbook(write_only=True)
    bold = Font(bold=True)
    for name, header, rows in sheets:
        sheet = book.create_sheet(name)
        if header:
            head = [_xlsx_cell(sheet, h) for h in header]
            for cell in head:
                cell.font = bold
            sheet.append(head)
        for row in rows:
            sheet.append(list(_xlsx_row(sheet, row)))
    book.save(path)
    return path


def _xlsx_row(sheet: WriteOnlyWorksheet, row: Sequence[Any]) -> Iterator[Any]:
    for value in row:
        yield _xlsx_cell(sheet, value) if isinstance(value, str) else value


def _xlsx_cell(sheet: WriteOnlyWorksheet, text: str) -> WriteOnlyCell:
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, _XML_ILLEGAL.sub("\ufffd", text))  # openpyxl reads "=…" as a formula here
    cell.data_type = "s"  # …so it is set back to a string
    if looks_like_formula(text):
        cell.quotePrefix = True
    return cell
