"""No input stops a reader: arbitrary bytes, arbitrary JSON values in every field and arbitrary Unicode
(lone surrogates, controls, line separators) come out as Transcripts that can be stored or as Rejects
that can be written, and every JSON line comes out exactly once.

The budget is the Hypothesis profile (tests/conftest.py): small in CI, HYPOTHESIS_PROFILE=bench for a
long run.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.grading.job import GradeJob, run_job
from pipeline.grading.settings import load_settings
from pipeline.inputs.files import InputFormat
from pipeline.inputs.limits import id_problem, label_problem
from pipeline.inputs.transcripts import TranscriptReader
from pipeline.models.transcript import Reject, Transcript
from pipeline.outputs.exports import ExportFormat, export_run
from pipeline.outputs.summary import GROUP_BY, summarize_run, write_summary
from pipeline.rubric.load import load_rubric
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer

RUBRIC = Path(__file__).resolve().parents[2] / "rubric" / "ecommerce_cs.yaml"

# Characters that broke or could break something downstream, mixed into every text.
AWKWARD = ["\ud800", "\udfff", "\x00", "\x01", "\x1b", "\x7f", "\x85", "\u2028", "\u2029", "\v", "\f", "\x1c",
           "\r", "\t", "\ufeff", "\u200b", "\U0001f600", "=", "{{", "\\", '"', "客服", "亲"]
ANY_TEXT = st.lists(st.sampled_from(AWKWARD) | st.text(st.characters(exclude_categories=()), max_size=4),
                    max_size=5).map("".join)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ANY_TEXT, inner, max_size=3),
    max_leaves=8,
)
TIMES = st.sampled_from(["", " ", "2026-03-02 10:00:00", "2026-03-02T10:00:05+08:00", "1772416800", "2026/3/2 9:05"])
TURNS = st.fixed_dictionaries(
    {"role": st.sampled_from(["customer", "agent", "客服", " User ", "bot", "坐席"]) | JSON_VALUES,
     "text": st.sampled_from(["在吗", "亲，在的"]) | ANY_TEXT | JSON_VALUES},
    optional={"time": TIMES | JSON_VALUES, "speaker": ANY_TEXT | JSON_VALUES},
)
CHATS = st.fixed_dictionaries(
    {"id": st.text("abc123", min_size=1, max_size=3) | ANY_TEXT | JSON_VALUES,
     "turns": st.lists(TURNS, max_size=3) | JSON_VALUES},
    optional={key: ANY_TEXT | JSON_VALUES for key in ("platform", "shop", "agent_id")}
    | {"satisfaction": st.integers(0, 6) | JSON_VALUES},
)
VALID_TEXT = ANY_TEXT.map(lambda text: "".join(c for c in text if not "\ud800" <= c <= "\udfff"))
NAMES = st.text(st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=8)
# Conversations that must be graded, with awkward but valid text in every turn and odd names.
GOOD_CHATS = st.fixed_dictionaries(
    {"id": NAMES, "turns": st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["customer", "agent"]), "text": VALID_TEXT.map(lambda text: "亲" + text)},
        optional={"time": TIMES, "speaker": NAMES}), min_size=1, max_size=3)},
    optional={key: NAMES for key in ("platform", "shop", "agent_id")},
)
# A line of a .jsonl file: a conversation-shaped object, any JSON value, or any text; written with or without
# ASCII escapes (a lone surrogate written raw becomes bytes that are not UTF-8).
JSON_LINES = st.one_of(
    st.builds(json.dumps, CHATS | JSON_VALUES, ensure_ascii=st.booleans()),
    ANY_TEXT.map(lambda text: "x" + text.replace("\n", " ")),
).map(lambda line: line.encode("utf-8", "surrogatepass"))


def read_bytes(data: bytes, fmt: InputFormat) -> list[Transcript | Reject]:
    """Everything one reader makes of `data`, read as a file's lines are."""
    items = list(TranscriptReader().read_lines(io.BytesIO(data), source="in", fmt=fmt))
    assert all(isinstance(item, Transcript | Reject) for item in items)
    return items  # type: ignore[return-value]  # no memo: never Finished


def assert_storable(items: list[Transcript | Reject]) -> None:
    """Every transcript serialises to UTF-8 with usable ids and names; every reject can be written."""
    for item in items:
        if isinstance(item, Reject):
            json.dumps(item.model_dump(), ensure_ascii=False).encode("utf-8")
            continue
        item.model_dump_json().encode("utf-8")
        assert id_problem(item.id) is None
        names = [item.platform, item.shop, item.agent_id, *(turn.speaker for turn in item.turns)]
        assert all(label_problem(name) is None for name in names if name is not None)


@given(data=st.binary(max_size=400), fmt=st.sampled_from(["jsonl", "csv", "chatlog"]))
def test_no_bytes_stop_a_reader(data: bytes, fmt: InputFormat) -> None:
    assert_storable(read_bytes(data, fmt))


@given(data=st.lists(st.sampled_from([b"\x00", b"\xff\xfe", b"\xe4\xbd", b"{", b"[", b'"', b"\\ud800", b"\n",
                                      b"\r", b",", b"id", b"2026-03-02 10:00:00 ", b"\xe5\xae\xa2\xe6\x9c\x8d: "]),
                     max_size=40).map(b"".join),
       fmt=st.sampled_from(["jsonl", "csv", "chatlog"]))
def test_no_structured_noise_stops_a_reader(data: bytes, fmt: InputFormat) -> None:
    assert_storable(read_bytes(data, fmt))


def line_of(item: Transcript | Reject) -> int | None:
    if isinstance(item, Reject):
        return item.line
    assert item.source is not None
    return int(item.source.rsplit(":", 1)[1])


@given(lines=st.lists(JSON_LINES, min_size=1, max_size=8))
def test_every_json_line_is_graded_or_rejected_exactly_once(lines: list[bytes]) -> None:
    items = read_bytes(b"\n".join(lines) + b"\n", "jsonl")
    assert_storable(items)
    whole_file = [item for item in items if isinstance(item, Reject) and item.reason.startswith("the file ")]
    if whole_file:  # NUL bytes, or text that is neither UTF-8 nor GBK: one reject stands for the file
        assert items == whole_file and whole_file[0].line == 1
        return
    assert sorted(line_of(item) or 0 for item in items) == list(range(1, len(lines) + 1))


CSV_CELLS = ANY_TEXT | st.sampled_from(["c1", "customer", "agent", "2026-03-02 10:00:00", ""])


@given(rows=st.lists(st.lists(CSV_CELLS, min_size=3, max_size=8), max_size=6))
def test_any_cells_in_a_csv_are_read_or_rejected(rows: list[list[str]]) -> None:
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(["conversation_id", "role", "text", "time", "speaker", "platform", "shop", "agent_id"])
    writer.writerows(rows)
    items = read_bytes(out.getvalue().encode("utf-8", "surrogatepass"), "csv")
    assert_storable(items)
    assert items


@given(lines=st.lists(st.sampled_from(["2026-03-02 10:15:03 小明: ", "2026-03-02 10:15:09 店铺:小美: ",
                                       "----- 会话 c1 -----", "小明 2026-03-02 10:16:00", ""]) | ANY_TEXT,
                      max_size=10))
def test_any_lines_in_a_chat_log_are_read_or_rejected(lines: list[str]) -> None:
    items = read_bytes("\n".join(lines).encode("utf-8", "surrogatepass"), "chatlog")
    assert_storable(items)
    assert items


def chat(conv_id: Any, text: str = "在吗", **fields: Any) -> dict[str, Any]:
    return {"id": conv_id, "turns": [{"role": "customer", "text": text}, {"role": "agent", "text": "亲"}], **fields}


@given(value=JSON_VALUES, field=st.sampled_from(["id", "turns", "platform", "shop", "agent_id", "satisfaction"]))
def test_any_json_value_in_any_field_is_read_or_rejected_naming_the_field(value: Any, field: str) -> None:
    line = json.dumps(chat("c1") | {field: value}).encode()
    [item] = read_bytes(line, "jsonl")
    assert_storable([item])
    if isinstance(item, Reject):
        assert item.line == 1 and item.field is not None and item.field.split("[")[0] == field


def json_lines(path: Path) -> list[Any]:
    """A JSON Lines file's values, read with str.splitlines, which also splits at U+2028, U+0085…: kefu writes
    them escaped, so each record is still one line."""
    return [json.loads(row) for row in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as running:
        yield running


# A whole run per example: a tenth of the profile's budget.
@settings(max_examples=max(4, settings.default.max_examples // 10))
@given(lines=st.lists(JSON_LINES | st.builds(json.dumps, GOOD_CHATS, ensure_ascii=st.booleans()).map(str.encode),
                      min_size=1, max_size=5), redact=st.booleans())
@example(lines=[json.dumps(chat("c1", "a\u2028b\x85c"), ensure_ascii=False).encode(),
                b'{"id": "\\u0085", "turns": []}'], redact=False)
def test_a_run_over_any_lines_grades_or_rejects_each_once_and_every_export_is_written(
        server: MockServer, lines: list[bytes], redact: bool) -> None:
    with tempfile.TemporaryDirectory() as folder:
        inputs, out = Path(folder) / "in.jsonl", Path(folder) / "out"
        inputs.write_bytes(b"\n".join(lines) + b"\n")
        settings_ = load_settings(None, {"base_url": server.base_url, "model": "mock-model", "retry_attempts": 1},
                                  environ={})
        job = GradeJob(inputs=[inputs], rubric_path=RUBRIC, out_dir=out, redact=redact)
        result = asyncio.run(run_job(job, settings_))
        graded = [row["source"] for row in json_lines(result.checks_jsonl)]
        rejects = json_lines(result.rejects_jsonl) if result.rejects_jsonl.exists() else []
        assert len(graded) == result.summary.graded
        if not (len(rejects) == 1 and rejects[0]["reason"].startswith("the file ")):
            numbers = [int(source.rsplit(":", 1)[1]) for source in graded] + [r["line"] for r in rejects]
            assert sorted(numbers) == list(range(1, len(lines) + 1))
        with Store.open(out) as store:
            rubric = load_rubric(RUBRIC)
            for fmt in get_args(ExportFormat):
                export_run(store, rubric, fmt, out)
            for by in GROUP_BY:
                write_summary(summarize_run(store, rubric, by), rubric, by, out / f"by_{by}.xlsx", "xlsx")
