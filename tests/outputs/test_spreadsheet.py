"""The QA lead's spreadsheet read back with openpyxl: sheets, headings, fills, frozen panes, filters, split.

The run is test_summary's hand-computed one (tiny_hooks: t2's pitch capped 4→0, t3 failed by a
check, t4 failed by polite 0), plus t5 graded with cited evidence.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook
from openpyxl.worksheet.worksheet import Worksheet
from test_summary import MAR2, fill

from pipeline.models.grade import CriterionGrade, Grade, QuotedEvidence
from pipeline.outputs.spreadsheet import evidence_text, write_spreadsheet
from pipeline.outputs.workbook import Book, Column, Style
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

DATA = Path(__file__).resolve().parents[1] / "data"
NOTE = "评分来源：m · 未经一致性检验"
SHEETS = ["评分", "逐项评分", "服务检查", "团队汇总", "字段说明"]


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(DATA / "tiny_hooks.yaml")


def graded_run(folder: Path, rubric: Rubric) -> Store:
    store = Store.open(folder)
    fill(store, rubric)
    run = store.start_run(rubric_id=rubric.id, rubric_version="1", rubric_hash=rubric.content_hash,
                          template_hash="p", model="m", settings={})
    evidence = [QuotedEvidence(turn=2, quote="亲，您好", verified=True),
                QuotedEvidence(turn=1, quote="=在吗", verified=False)]
    criteria = [CriterionGrade(criterion_id=c.id, score=c.max, reasoning="问候完整", evidence=evidence)
                for c in rubric.criteria()]
    store.save_grade(Grade(key="t5", transcript_id="t5", repeat=0, scope="all", status="scored", criteria=criteria,
                           model="m", attempts=1, created_at=MAR2), run, rubric.content_hash)
    return store


def rows(sheet: Worksheet) -> list[list[object]]:
    return [[c.value for c in row] for row in sheet.iter_rows()]


def fill_of(sheet: Worksheet, row: int, heading: str, header_row: int = 2) -> str:
    col = [c.value for c in sheet[header_row]].index(heading) + 1
    return str(sheet.cell(row, col).fill.fgColor.rgb)[-6:]


def test_the_book_has_a_sheet_per_purpose_with_chinese_headings(rubric: Rubric, tmp_path: Path) -> None:
    with graded_run(tmp_path, rubric) as store:
        path = write_spreadsheet(store, rubric, tmp_path / "scores.xlsx", judge_note=NOTE)
    book = load_workbook(path)
    assert book.sheetnames == SHEETS
    scores = book["评分"]
    assert scores["A1"].value == NOTE  # who graded heads the sheet
    header = [c.value for c in scores[2]]
    assert header[:7] == ["会话编号", "重复序号", "评分状态", "礼貌 (4)", "招呼 (2)", "沟通小计 (6)", "推荐 (4)"]
    assert "总分 (10)" in header and "致命项" in header
    assert scores.freeze_panes == "B3"
    assert scores.auto_filter.ref == f"A2:{scores.cell(2, len(header)).column_letter}8"  # 6 rows: t1 twice, t2..t5
    assert scores.column_dimensions["A"].width >= 20
    # Rows in transcript order: t1r0, t1r1, t2, t3, t4, t5 on sheet rows 3..8.
    assert fill_of(scores, 5, "推荐 (4)") == "FFEB9C"  # t2's pitch capped 4→0
    assert fill_of(scores, 6, "总分 (10)") == "C00000"  # t3 failed by its checks
    assert fill_of(scores, 7, "礼貌 (4)") == "C00000"  # t4 failed by polite 0
    assert fill_of(scores, 7, "招呼 (2)") == "FFC7CE"  # t4's greet at its lowest level
    assert fill_of(scores, 3, "礼貌 (4)") == "000000"  # full marks: no fill
    assert [scores.cell(r, 1).value for r in range(3, 9)] == ["t1", "t1", "t2", "t3", "t4", "t5"]
    assert scores.cell(6, header.index("致命项") + 1).value == "是"
    adjustments = [scores.cell(r, header.index("扣分调整") + 1).value for r in range(3, 9)]
    assert adjustments == [None, None, "推荐 封顶 4→0：超过10分钟未回复", "致命项：多次使用禁用语",
                           "致命项：礼貌 得 0 分：态度粗鲁", None]  # names, not ids


def test_grades_show_evidence_as_text_and_ids_are_explained(rubric: Rubric, tmp_path: Path) -> None:
    with graded_run(tmp_path, rubric) as store:
        book = load_workbook(write_spreadsheet(store, rubric, tmp_path / "scores.xlsx"))
    grades = book["逐项评分"]
    assert grades.freeze_panes == "B2" and grades.auto_filter.ref is not None
    header = rows(grades)[0]
    line = dict(zip(header, rows(grades)[-1], strict=True))  # t5's last criterion
    assert line["评分项"] == "推荐" and line["评分项编号"] == "pitch" and line["维度"] == "销售"
    assert line["证据"] == "#2 「亲，您好」\n#1 「=在吗」（未核实：该轮没有这句话）"
    assert line["引文全部核对"] == "否"
    legend = {(r[1], r[2]): r[0] for r in rows(book["字段说明"])[1:]}
    assert legend[("polite", "评分")] == "礼貌 (4)" and legend[("talk", "评分")] == "沟通小计 (6)"
    assert legend[("banned_hits", "服务检查")] == "禁用语次数"
    checks = rows(book["服务检查"])
    assert checks[0][:4] == ["会话编号", "平台", "店铺", "客服"] and len(checks) == 5  # t1..t4 have checks


def test_a_full_sheet_goes_on_in_a_continuation_sheet(rubric: Rubric, tmp_path: Path) -> None:
    with graded_run(tmp_path, rubric) as store:
        book = load_workbook(write_spreadsheet(store, rubric, tmp_path / "s.xlsx", judge_note=NOTE, max_rows=4))
    # Title and header leave 2 rows of data per sheet: 6 score rows → 3 sheets, 18 grade lines → 9.
    parts = [n for n in book.sheetnames if n.startswith("评分")]
    assert parts == ["评分", "评分 (2)", "评分 (3)"]
    data = []
    for name in parts:
        sheet = book[name]
        assert sheet.max_row <= 4 and sheet["A1"].value == NOTE and sheet["A2"].value == "会话编号"
        assert sheet.freeze_panes == "B3"
        data += [r[0] for r in rows(sheet)[2:]]
    assert data == ["t1", "t1", "t2", "t3", "t4", "t5"]
    assert "逐项评分 (9)" in book.sheetnames and "逐项评分 (10)" not in book.sheetnames


def test_evidence_text_names_the_failed_check() -> None:
    assert evidence_text([{"turn": 3, "quote": "您好", "verified": True}]) == "#3 「您好」"
    assert evidence_text([{"turn": 1, "quote": "在吗", "verified": False, "verify_failed": "wrong_speaker"}]) == (
        "#1 「在吗」（未核实：这句话不是该评分项评判的一方说的）")


@settings(max_examples=20, deadline=None)
@given(n=st.integers(0, 12), max_rows=st.integers(3, 6), title=st.booleans())
def test_split_sheets_hold_every_row_once_in_order(n: int, max_rows: int, title: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        book = Book(Path(tmp) / "b.xlsx", max_rows=max_rows)
        sheet = book.sheet("表", [Column("甲"), Column("乙")], title=NOTE if title else None)
        for i in range(n):
            sheet.append_plain([f"r{i}", i])
        read = load_workbook(book.close())
    head = 2 if title else 1
    per_sheet = max_rows - head
    expected_sheets = max(1, -(-n // per_sheet))
    assert read.sheetnames == ["表", *(f"表 ({k})" for k in range(2, expected_sheets + 1))]
    values = [r[1] for name in read.sheetnames for r in rows(read[name])[head:]]
    assert values == list(range(n))
    assert all(rows(read[name])[head - 1] == ["甲", "乙"] for name in read.sheetnames)


@given(quotes=st.lists(st.tuples(st.integers(1, 99), st.text(alphabet=st.characters(blacklist_characters="\n\r"))),
                       max_size=4))
def test_evidence_text_keeps_every_quote_on_its_own_line(quotes: list[tuple[int, str]]) -> None:
    text = evidence_text([{"turn": t, "quote": q, "verified": True} for t, q in quotes])
    assert text.split("\n") == [f"#{t} 「{q}」" for t, q in quotes] or (not quotes and text == "")


def test_service_checks_sit_under_their_headings_failures_red_borderline_orange(rubric: Rubric,
                                                                                tmp_path: Path) -> None:
    with graded_run(tmp_path, rubric) as store:
        book = load_workbook(write_spreadsheet(store, rubric, tmp_path / "s.xlsx"))
    sheet = book["服务检查"]
    header = rows(sheet)[0]
    by_id = {r[0]: dict(zip(header, r, strict=True)) for r in rows(sheet)[1:]}
    # Each value under its own heading (the headings once followed another order than the cells).
    assert by_id["t1"]["首次人工回复用时(秒)"] == 30 and by_id["t1"]["顾客消息数"] == 1
    assert by_id["t3"]["禁用语次数"] == 2 and by_id["t1"]["问候语原文"] == "您好"
    assert fill_of(sheet, 4, "禁用语次数", 1) == "FFC7CE"  # t3: a banned phrase, a clear failure
    assert fill_of(sheet, 2, "10秒内问候(含问候语)", 1) == "FFC7CE"  # t1: first reply after 30 s, the greeting rule
    assert fill_of(sheet, 2, "10秒内首次回复", 1) == "FCE4D6"  # the same, as the timing alone: worth a look
    assert fill_of(sheet, 4, "1分钟内回复占比", 1) == "FCE4D6"  # t3: one reply of two over a minute
    assert fill_of(sheet, 2, "禁用语次数", 1) == "000000" and fill_of(sheet, 2, "2分钟内首次回复", 1) == "000000"
    legend = {r[3]: r[2] for r in rows(book["字段说明"])[1:] if r[0] == "底色示例"}
    warn = next(text for text in legend if text.startswith("留意"))
    assert legend[warn] == "服务检查" and "服务检查" in next(s for t, s in legend.items() if t.startswith("失分"))
    swatches = [r for r in book["字段说明"].iter_rows(min_row=2) if r[0].value == "底色示例"]
    assert {str(r[0].fill.fgColor.rgb)[-6:] for r in swatches} >= {"FFC7CE", "FCE4D6"}


def test_team_means_show_and_hold_two_decimals(rubric: Rubric, tmp_path: Path) -> None:
    with graded_run(tmp_path, rubric) as store:
        book = load_workbook(write_spreadsheet(store, rubric, tmp_path / "s.xlsx"))
    team = book["团队汇总"]
    header = [c.value for c in team[1]]
    mean = header.index("平均总分") + 1
    assert {team.cell(r, mean).number_format for r in range(2, team.max_row + 1)} == {"0.00"}
    path = Book(tmp_path / "means.xlsx")
    path.sheet("团队汇总", [Column("平均总分")]).append([(56.66667, Style.decimal)])
    cell = load_workbook(path.close())["团队汇总"]["A2"]
    assert (cell.value, cell.number_format) == (56.67, "0.00")  # what is stored is what is shown
