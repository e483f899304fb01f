"""Streaming xlsx sheets for people: a title line, a frozen header with filters, widths, fills, and the row limit.

Written with XlsxWriter in constant-memory mode: each row goes to disk when the next one starts and
strings are stored inline, so memory does not grow with the run (openpyxl's write-only mode still
keeps every distinct string in a shared table). A sheet that reaches Excel's 1,048,576 rows goes on
in "名 (2)", "名 (3)" …, each with the same title and header; continuation sheets come after the
book's other sheets. Text cells follow pipeline/outputs/cells.py: always strings, never formulas.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import xlsxwriter
from xlsxwriter.format import Format
from xlsxwriter.worksheet import Worksheet

from pipeline.outputs.cells import looks_like_formula, xlsx_text

EXCEL_ROWS = 1_048_576
"""Rows in one Excel sheet, title and header included."""


class Style(StrEnum):
    """The fills and fonts a cell can carry; the 字段说明 sheet shows each one as its legend."""

    fail = "fail"
    warn = "warn"
    capped = "capped"
    critical = "critical"
    unscored = "unscored"
    subtotal = "subtotal"
    wrap = "wrap"
    percent = "percent"
    decimal = "decimal"
    """A mean: shown, and stored, with two decimals (the CSV keeps four), so no reader sees 5.6667."""


_FORMATS: dict[str, dict[str, Any]] = {
    "head": {"bold": True, "bg_color": "#D9E1F2", "text_wrap": True, "valign": "vcenter", "bottom": 1},
    "title": {"bold": True, "font_color": "#9C0006"},
    "quote": {"quote_prefix": True},
    Style.fail: {"bg_color": "#FFC7CE", "font_color": "#9C0006"},
    Style.warn: {"bg_color": "#FCE4D6", "font_color": "#833C0B", "italic": True},
    Style.capped: {"bg_color": "#FFEB9C", "font_color": "#9C5700"},
    Style.critical: {"bg_color": "#C00000", "font_color": "#FFFFFF", "bold": True},
    Style.unscored: {"bg_color": "#D9D9D9"},
    Style.subtotal: {"bold": True, "bg_color": "#F2F2F2"},
    Style.wrap: {"text_wrap": True, "valign": "top"},
    Style.percent: {"num_format": "0.0%"},
    Style.decimal: {"num_format": "0.00"},
}

STYLE_MEANINGS: dict[Style, tuple[str, str]] = {
    Style.fail: ("评分、逐项评分、服务检查",
                 "失分：该项得了最低档；服务检查中为明确未达标（如未回复、用了禁用语、没有问候语）"),
    Style.warn: ("服务检查",
                 "留意：接近或略超标准，需人工看一眼（如首次回复超过10秒、个别回复超过1分钟、负面或转折用语、"
                 "低星评价、无法计时）"),
    Style.capped: ("评分、逐项评分", "封顶：规则按服务检查结果压低了模型给分"),
    Style.critical: ("评分、逐项评分", "致命项：整通会话总分记 0"),
    Style.unscored: ("评分、逐项评分", "未评分：模型没有给出可用的分数（不是 0 分）"),
    Style.subtotal: ("评分", "小计：维度或分组合计"),
}
"""The legend, in the order the 字段说明 sheet shows it: the sheets a style appears on, and what it means."""


@dataclass(frozen=True)
class Column:
    """A column's heading and its width in characters (None: fitted to the heading)."""

    heading: str
    width: float | None = None


def text_width(text: str) -> int:
    """Display width of one line: CJK and full-width characters count two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _fitted(column: Column) -> float:
    return column.width if column.width is not None else min(max(text_width(column.heading) + 2, 8), 24)


Cell = tuple[Any, Style | None]
"""A value and its style; a str is written as text, int/float as a number, None as an empty (styled) cell."""


class Book:
    """An xlsx file being written; sheets are added in order and stream their rows."""

    def __init__(self, path: Path, *, max_rows: int = EXCEL_ROWS) -> None:
        self.path = path
        self.max_rows = max_rows
        self._book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                                     "strings_to_formulas": False, "strings_to_urls": False})
        self.formats: dict[str, Format] = {name: self._book.add_format(spec) for name, spec in _FORMATS.items()}
        self._sheets: list[Sheet] = []

    def sheet(self, name: str, columns: Sequence[Column], *, title: str | None = None,
              freeze_columns: int = 1, filters: bool = True) -> Sheet:
        """A new sheet with a title line (when given) and a frozen header row."""
        sheet = Sheet(self, name, list(columns), title, freeze_columns, filters)
        self._sheets.append(sheet)
        return sheet

    def new_worksheet(self, name: str) -> Worksheet:
        """A worksheet added at the end of the book."""
        return self._book.add_worksheet(name)

    def close(self) -> Path:
        """Finish every sheet (filters over the rows written) and the file."""
        for sheet in self._sheets:
            sheet.finish()
        self._book.close()
        return self.path


class Sheet:
    """One logical sheet, continued on further worksheets at the row limit."""

    def __init__(self, book: Book, name: str, columns: list[Column], title: str | None,
                 freeze_columns: int, filters: bool) -> None:
        self._book = book
        self.name = name
        self._columns = columns
        self._title = title
        self._freeze_columns = freeze_columns
        self._filters = filters
        self._parts = 0
        self._ws: Worksheet = self._start()

    @property
    def _header_row(self) -> int:
        return 1 if self._title is not None else 0

    def _start(self) -> Worksheet:
        self._parts += 1
        ws = self._book.new_worksheet(self.name if self._parts == 1 else f"{self.name} ({self._parts})")
        for i, column in enumerate(self._columns):
            ws.set_column(i, i, _fitted(column))
        if self._title is not None:
            ws.write_string(0, 0, xlsx_text(self._title), self._book.formats["title"])
        head = self._book.formats["head"]
        ws.set_row(self._header_row, 32)  # two lines: a long heading wraps within its width
        for i, column in enumerate(self._columns):
            ws.write_string(self._header_row, i, xlsx_text(column.heading), head)
        ws.freeze_panes(self._header_row + 1, self._freeze_columns)
        # Printed: landscape, all columns on the page's width, the header repeated on every page.
        ws.set_landscape()
        ws.fit_to_pages(1, 0)
        ws.repeat_rows(0, self._header_row)
        self._row = self._header_row + 1
        return ws

    def append(self, cells: Iterable[Cell]) -> None:
        """Write one row, starting a continuation worksheet when this one is full."""
        if self._row >= self._book.max_rows:
            self.finish()
            self._ws = self._start()
        formats = self._book.formats
        ws, row = self._ws, self._row
        for col, (value, style) in enumerate(cells):
            fmt = formats[style] if style is not None else None
            if value is None:
                if fmt is not None:
                    ws.write_blank(row, col, None, fmt)
            elif isinstance(value, str):
                if looks_like_formula(value):
                    fmt = formats["quote"]
                ws.write_string(row, col, xlsx_text(value), fmt)
            elif isinstance(value, bool):
                ws.write_string(row, col, "是" if value else "否", fmt)
            else:
                ws.write_number(row, col, round(value, 2) if style is Style.decimal else value, fmt)
        self._row += 1

    def append_plain(self, values: Iterable[Any]) -> None:
        """Write one row of unstyled values."""
        self.append((v, None) for v in values)

    def finish(self) -> None:
        """Put the filter on the header and the rows written below it."""
        if self._filters and self._columns:
            self._ws.autofilter(self._header_row, 0, max(self._row - 1, self._header_row), len(self._columns) - 1)


def write_table(path: Path, name: str, headings: Sequence[str], rows: Iterable[Sequence[Any]], *,
                title: str | None = None, styles: Sequence[Style | None] | None = None) -> Path:
    """A one-sheet book of rows under these headings, each column in its style (`styles`, default none)."""
    book = Book(path)
    sheet = book.sheet(name, [Column(h) for h in headings], title=title)
    column_styles = styles or [None] * len(headings)
    for row in rows:
        sheet.append(zip(row, column_styles, strict=True))
    return book.close()
