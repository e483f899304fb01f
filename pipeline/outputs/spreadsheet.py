"""The run's spreadsheet for a QA lead: 评分, 逐项评分, 服务检查, 团队汇总 and 字段说明 sheets.

Headings are the Chinese names of pipeline/outputs/headings.py, points shown against each criterion's
maximum; criterion ids are on the 字段说明 sheet. A criterion at its lowest level is filled red, a
capped one amber, a critical failure dark red; unscored cells are grey, never 0. On 服务检查 a clear
failure is red and a value worth a look (borderline, or not measurable) orange. Evidence reads
"#3 「您好」", with the reason when a quote could not be verified. Rows stream from the store into
pipeline/outputs/workbook.py, so memory does not grow with the run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.models.checks import CHECKS, FirstReply
from pipeline.outputs.exports import LineFields, StoredRow, iter_final_rows, iter_line_fields, stored_check_columns
from pipeline.outputs.headings import CHECK_HEADINGS, GROUP_HEADINGS, STATUS_WORDS, score_headings, summary_headings
from pipeline.outputs.summary import column_styles, summarize_run
from pipeline.outputs.workbook import EXCEL_ROWS, STYLE_MEANINGS, Book, Cell, Column, Sheet, Style
from pipeline.rubric.hooks import AdjustedScores
from pipeline.rubric.model import Criterion, Rubric
from pipeline.store.store import Store

_WIDE = 50
_ID_WIDTH = 20

UNVERIFIED_WORDS: dict[str, str] = {
    "not_in_turn": "该轮没有这句话",
    "wrong_speaker": "这句话不是该评分项评判的一方说的",
}
"""Why a quote failed verification (grades.jsonl `verify_failed`), as the 证据 cell says it."""

GRADE_COLUMNS = [
    ("transcript_id", "会话编号", _ID_WIDTH), ("repeat", "重复序号", None), ("dimension", "维度", 12),
    ("criterion", "评分项", 16), ("criterion_id", "评分项编号", 18), ("score", "得分", None),
    ("max", "满分", None), ("llm_score", "模型给分", None), ("adjustment", "调整说明", 30),
    ("reasoning", "理由", _WIDE), ("evidence", "证据", _WIDE), ("quotes_verified", "引文全部核对", None),
    ("model", "评分模型", 16),
]
"""The 逐项评分 sheet: (id, heading, width)."""

CHECK_META = [("transcript_id", "会话编号"), ("platform", "平台"), ("shop", "店铺"), ("agent_id", "客服")]

_FAILING_FLAGS = frozenset({"greeted_within_limit", "first_reply_within_limit", "honorific_used", "greeting_found",
                            "closing_found", "refusal_first_words_ok"})
"""Service checks a chat clearly failed when False: a standard the seeds set for every chat."""
_COUNTED_FAULTS = frozenset({"unanswered_messages", "banned_hits", "negation_refusal_hits",
                             "refusals_without_apology"})
"""Counts where one is a clear failure."""
_BORDERLINE_FLAGS = frozenset({"first_reply_within_greet_limit", "mean_wait_within_rate_limit", "satisfied"})
"""False is worth a look but not a failure on its own: the 10 s first reply is the greeting's aim, the 3-minute
mean wait a standard on the shop's average, and a low star rating the customer's view."""
_COUNTED_WARNINGS = frozenset({"negative_language_hits", "but_words_hits"})
_BORDERLINE_SHARES = frozenset({"share_within_reply_limit", "share_within_rate_limit"})
"""Below 1: some reply was slower than the limit."""


def check_style(name: str, value: Any) -> Style | None:
    """How the 服务检查 sheet marks a check's value: red for a clear failure, orange for one worth a look."""
    if value is None:
        return None
    if (name in _FAILING_FLAGS and value is False) or (name in _COUNTED_FAULTS and value > 0) or (
            name == "first_reply_status" and value == FirstReply.no_human_reply):
        return Style.fail
    if (name in _BORDERLINE_FLAGS and value is False) or (name in _COUNTED_WARNINGS and value > 0) or (
            name in _BORDERLINE_SHARES and value < 1) or name == "timing_not_measurable":
        return Style.warn
    return None


def evidence_text(evidence: list[dict[str, Any]]) -> str:
    """Quotes as people read them, one per line: `#3 「您好」`, plus why one could not be verified."""
    lines = []
    for e in evidence:
        line = f"#{e['turn']} 「{e['quote']}」"
        if not e["verified"]:
            line += f"（未核实：{UNVERIFIED_WORDS.get(e.get('verify_failed') or 'not_in_turn')}）"
        lines.append(line)
    return "\n".join(lines)


def _criterion_style(c: Criterion, score: int | None, cid: str, adjusted: AdjustedScores) -> Style | None:
    if score is None:
        return Style.unscored
    for a in adjusted.adjustments:
        if a.criterion_id == cid:
            return Style.critical if a.kind == "critical" else Style.capped
    return Style.fail if score == c.points[0] else None


def write_spreadsheet(store: Store, rubric: Rubric, path: Path, *, judge_note: str | None = None,
                      max_rows: int = EXCEL_ROWS) -> Path:
    """Write the run's book to `path`; `judge_note` heads the score sheets (who graded, whether checked)."""
    book = Book(path, max_rows=max_rows)
    headings = score_headings(rubric)
    scores = book.sheet("评分", _score_columns(rubric, headings), title=judge_note, freeze_columns=1)
    grades = book.sheet("逐项评分", [Column(h, w) for _, h, w in GRADE_COLUMNS], title=judge_note, freeze_columns=1)
    check_headings = [h for _, h in CHECK_META] + [CHECK_HEADINGS[name] for name in CHECKS]  # the order of the cells
    checks = book.sheet("服务检查", [Column(h, _ID_WIDTH if i == 0 else None) for i, h in enumerate(check_headings)])
    placed = {c.id: (c, d.name) for d in rubric.dimensions for g in d.groups for c in g.criteria}
    for row, adjusted, values in iter_final_rows(store, rubric):
        scores.append(_score_cells(rubric, row, adjusted, values))
        for f in iter_line_fields(row, adjusted):
            grades.append(_grade_cells(placed, row, f, adjusted))
    _write_checks(store, checks)
    _write_summary(book, store, rubric)
    _write_legend(book, rubric, headings, judge_note)
    return book.close()


def _score_columns(rubric: Rubric, headings: dict[str, str]) -> list[Column]:
    cols = [Column(headings["transcript_id"], _ID_WIDTH), Column(headings["repeat"]), Column(headings["status"])]
    for d in rubric.dimensions:
        cols += [Column(headings[c.id]) for g in d.groups for c in g.criteria]
        cols.append(Column(headings[d.id]))
    return [*cols, Column(headings["total"]), Column(headings["critical_failed"]),
            Column(headings["adjustments"], 40), Column(headings["llm_total"]), Column(headings["model"], 16)]


def _score_cells(rubric: Rubric, row: StoredRow, adjusted: AdjustedScores, values: dict[str, Any]) -> Iterator[Cell]:
    yield row.transcript_id, None
    yield row.repeat, None
    yield STATUS_WORDS[row.status], None
    for d in rubric.dimensions:
        for g in d.groups:
            for c in g.criteria:
                yield values[c.id], _criterion_style(c, values[c.id], c.id, adjusted)
        yield values[d.id], Style.subtotal if values[d.id] is not None else Style.unscored
    failed = adjusted.critical_failed
    yield values["total"], Style.critical if failed else (Style.subtotal if values["total"] is not None
                                                          else Style.unscored)
    yield failed, Style.critical if failed else None
    yield adjusted.describe(), None
    yield values["llm_total"], None
    yield row.model, None


def _grade_cells(placed: dict[str, tuple[Criterion, str]], row: StoredRow, f: LineFields,
                 adjusted: AdjustedScores) -> list[Cell]:
    """One 逐项评分 row; `placed` maps a criterion id to the criterion and its dimension's name (a stored
    grade may name a criterion the rubric no longer has: its id stands in for the name)."""
    cid = f.criterion["criterion_id"]
    known, dimension = placed.get(cid, (None, None))
    style = _criterion_style(known, f.score, cid, adjusted) if known is not None else None
    return [
        (row.transcript_id, None), (row.repeat, None), (dimension, None), (known.name if known else cid, None),
        (cid, None), (f.score, style), (known.max if known else None, None), (f.criterion["score"], None),
        (adjusted.describe(cid), None),
        (f.criterion["reasoning"], Style.wrap),
        (evidence_text(f.criterion["evidence"]), Style.wrap), (f.quotes_verified, None), (f.grade.model, None),
    ]


def _write_checks(store: Store, sheet: Sheet) -> None:
    for t in store.iter_transcript_rows():
        columns = stored_check_columns(t.checks) or {}
        cells: list[Cell] = [(t.id, None), (t.platform, None), (t.shop, None), (t.agent_id, None)]
        for name in CHECKS:
            value = columns.get(name)
            cells.append((value, check_style(name, value)))
        sheet.append(cells)


def _write_summary(book: Book, store: Store, rubric: Rubric) -> None:
    groups = summarize_run(store, rubric, "agent")
    headings = summary_headings(rubric, "agent")
    rows = [g.columns("agent") for g in groups]
    keys = list(rows[0] if rows else headings)
    sheet = book.sheet("团队汇总", [Column(headings[k]) for k in keys])
    styles = column_styles(keys)
    for r in rows:
        sheet.append(zip(r.values(), styles, strict=True))


def _write_legend(book: Book, rubric: Rubric, headings: dict[str, str], judge_note: str | None) -> None:
    sheet = book.sheet("字段说明", [Column("列名", 28), Column("编号", 24), Column("所在表", 12), Column("说明", 60)],
                       freeze_columns=0, filters=False)
    if judge_note is not None:
        sheet.append_plain(["评分来源", None, "全部", judge_note])
    for style, (sheets, meaning) in STYLE_MEANINGS.items():
        sheet.append([("底色示例", style), (None, None), (sheets, None), (meaning, None)])
    criteria = {c.id: c for c in rubric.criteria()}
    for cid, heading in headings.items():
        if cid in CHECKS:
            continue
        note = criteria[cid].description if cid in criteria else None
        sheet.append_plain([heading, cid, "评分", note or ("括号内为满分" if "(" in heading else None)])
    for cid, heading, _ in GRADE_COLUMNS:
        sheet.append_plain([heading, cid, "逐项评分", None])
    for cid, heading in [*CHECK_META, *CHECK_HEADINGS.items()]:
        sheet.append_plain([heading, cid, "服务检查", None])
    for cid, heading in summary_headings(rubric, "agent").items():
        sheet.append_plain([heading, cid, "团队汇总", GROUP_HEADINGS.get(cid) and "按客服分组"])
