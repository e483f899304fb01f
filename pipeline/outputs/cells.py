"""Spreadsheet cells from chat data: written so that no spreadsheet reads one as a formula.

Ids, agent names, shops, reasoning and quotes come from untrusted chats. A cell that starts with
`=`, `+`, `-` or `@` (or a tab or CR before one) is run as a formula by Excel, LibreOffice and Google
Sheets when the file is opened (`=HYPERLINK(...)`, `=WEBSERVICE(...)`, DDE). Following the OWASP
guidance on CSV injection (https://owasp.org/www-community/attacks/CSV_Injection):

- CSV: a text cell that could start a formula gets one `'` in front, which spreadsheets show as
  text. Text that already starts with `'` gets one too, so the rule reverses exactly: drop one
  leading `'` from any text cell that has one (`original_text`). Numbers are never changed: -3 is
  a number, not a formula.
- XLSX (pipeline/outputs/workbook.py): every text cell is stored as a string (never as a formula), marked
  with Excel's quote-prefix style when it looks like one, so editing the cell in Excel keeps it
  text. XML cannot hold most control characters; each becomes U+FFFD (`xlsx_text`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

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


def xlsx_text(text: str) -> str:
    """Text an xlsx cell can hold: each character XML cannot carry becomes U+FFFD."""
    return _XML_ILLEGAL.sub("\ufffd", text)
