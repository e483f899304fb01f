"""Resuming a large input: finished JSON lines are skipped without being parsed, and unchanged exports are kept.

Every run goes through `run_job` (the reader, the runner, the store and the exports) against the real
loopback server; a counter on the reader's JSON-object parser tells which lines were parsed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import KefuError
from pipeline.grading.job import GradeJob, JobResult, run_job
from pipeline.grading.settings import load_settings
from pipeline.inputs.formats import jsonl
from pipeline.store.store import DB_NAME
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content, Fault

REPO = Path(__file__).resolve().parents[2]
RUBRIC = REPO / "rubric" / "ecommerce_cs.yaml"


def chat(i: int, question: str = "什么时候发货？") -> dict[str, Any]:
    return {"id": f"c{i:03d}", "shop": "小店", "turns": [
        {"role": "customer", "text": f"第{i}个问题：{question}", "time": f"2026-03-02 10:{i:02d}:00"},
        {"role": "agent", "text": "亲，您好，今天下单今天发货哦", "time": f"2026-03-02 10:{i:02d}:08"},
    ]}


def write(path: Path, chats: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(c, ensure_ascii=False) + "\n" for c in chats), encoding="utf-8")
    return path


@pytest.fixture
def parsed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Line numbers the reader turned into a transcript (or a reject) from JSON, across runs."""
    seen: list[int] = []
    original = jsonl._transcript_from_json

    def counting(obj: dict[str, Any], file: Any, number: int, run: Any) -> Any:
        seen.append(number)
        return original(obj, file, number, run)

    monkeypatch.setattr(jsonl, "_transcript_from_json", counting)
    yield seen


def grade(server: MockServer, inputs: Path, out: Path, *, model: str = "mock-model", concurrency: int = 2,
          **job: Any) -> JobResult:
    settings = load_settings(None, {"base_url": server.base_url, "model": model, "concurrency": concurrency,
                                    "retry_attempts": 1}, environ={})
    return asyncio.run(run_job(GradeJob(inputs=[inputs], rubric_path=RUBRIC, out_dir=out, **job), settings))


def finished_lines(out: Path) -> int:
    with sqlite3.connect(out / DB_NAME) as db:
        return int(db.execute("SELECT COUNT(*) FROM finished_lines").fetchone()[0])


def test_a_resume_parses_no_finished_line_and_keeps_the_exports(
        mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    inputs = write(tmp_path / "chats.jsonl", [chat(i) for i in range(5)])
    out = tmp_path / "out"
    first = grade(mock_server, inputs, out)
    assert (first.summary.graded, len(mock_server.requests), parsed) == (5, 5, [1, 2, 3, 4, 5])
    assert finished_lines(out) == 5
    stamps = {p: p.stat().st_mtime_ns for p in (first.scores_csv, first.grades_jsonl, first.checks_jsonl)}
    parsed.clear()
    again = grade(mock_server, inputs, out)
    assert len(mock_server.requests) == 5  # no new request
    assert parsed == []  # and no line parsed
    assert (again.summary.transcripts, again.summary.skipped, again.summary.graded) == (5, 5, 0)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing new: the files were left alone
    assert again.dimension_means == first.dimension_means and first.dimension_means["total"] is not None


def test_an_edited_line_is_parsed_and_graded_again_and_only_it(
        mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    chats = [chat(i) for i in range(4)]
    inputs = write(tmp_path / "chats.jsonl", chats)
    out = tmp_path / "out"
    first = grade(mock_server, inputs, out)
    before = first.scores_csv.stat().st_mtime_ns
    chats[2] = chat(2, "能便宜点吗？")
    write(inputs, chats)
    parsed.clear()
    again = grade(mock_server, inputs, out)
    assert parsed == [3] and len(mock_server.requests) == 5
    assert (again.summary.graded, again.summary.skipped) == (1, 3)
    assert again.scores_csv.stat().st_mtime_ns != before  # a new grade: the exports are rewritten
    assert len(again.scores_csv.read_text(encoding="utf-8-sig").splitlines()) == 1 + 4  # c002 replaced, not added


def test_other_settings_reuse_no_finished_line(mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    inputs = write(tmp_path / "chats.jsonl", [chat(i) for i in range(3)])
    out = tmp_path / "out"
    grade(mock_server, inputs, out)
    parsed.clear()
    two = grade(mock_server, inputs, out, repeats=2)  # repeat 0 is done (by its key), repeat 1 is not
    assert parsed == [1, 2, 3] and (two.summary.graded, two.summary.skipped) == (3, 3)
    parsed.clear()
    other = grade(mock_server, inputs, out, model="other-model")
    assert parsed == [1, 2, 3] and other.summary.graded == 3
    parsed.clear()
    grade(mock_server, inputs, out, repeats=2)
    assert parsed == [] and len(mock_server.requests) == 9


def test_a_duplicate_line_is_still_rejected_on_resume(
        mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    inputs = write(tmp_path / "chats.jsonl", [chat(0), chat(1), chat(0)])
    out = tmp_path / "out"
    grade(mock_server, inputs, out)
    parsed.clear()
    again = grade(mock_server, inputs, out)
    assert parsed == [3]  # the finished line 1 is skipped; its copy on line 3 is read to be rejected
    assert again.summary.rejected == 1 and len(mock_server.requests) == 2
    (reject,) = [json.loads(line) for line in again.rejects_jsonl.read_text(encoding="utf-8").splitlines()]
    assert (reject["line"], reject["transcript_id"]) == (3, "c000") and "duplicate" in reject["reason"]


def test_a_store_without_finished_lines_learns_them_on_its_first_resume(
        mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    inputs = write(tmp_path / "chats.jsonl", [chat(i) for i in range(3)])
    out = tmp_path / "out"
    grade(mock_server, inputs, out)
    with sqlite3.connect(out / DB_NAME) as db:  # as a store written before finished lines existed
        db.execute("DELETE FROM finished_lines")
    parsed.clear()
    grade(mock_server, inputs, out)
    assert parsed == [1, 2, 3] and len(mock_server.requests) == 3 and finished_lines(out) == 3
    parsed.clear()
    grade(mock_server, inputs, out)
    assert parsed == []


def test_unscored_lines_are_skipped_but_retry_failed_reads_them(
        mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    inputs = write(tmp_path / "chats.jsonl", [chat(0)])
    out = tmp_path / "out"
    mock_server.script(Content(text="不是 JSON"), Content(text="还不是"))  # the reply and its re-ask
    first = grade(mock_server, inputs, out)
    assert first.summary.unscored == 1
    parsed.clear()
    assert grade(mock_server, inputs, out).summary.skipped == 1 and parsed == []  # unscored counts as done...
    retried = grade(mock_server, inputs, out, retry_failed=True)  # ...except for --retry-failed
    assert parsed == [1] and retried.summary.graded == 1 and len(mock_server.requests) == 3


def test_a_line_is_finished_only_with_its_last_grade(
        mock_server: MockServer, tmp_path: Path, parsed: list[int]) -> None:
    inputs = write(tmp_path / "chats.jsonl", [chat(0)])
    out = tmp_path / "out"
    settings = {"repeats": 2, "concurrency": 1}
    mock_server.script(Fault.unauthorized())  # a 401 stops the run at once
    with pytest.raises(KefuError):
        grade(mock_server, inputs, out, **settings)
    assert finished_lines(out) == 0
    mock_server.script(Content(text=json.dumps(valid_reply())), Fault.unauthorized())
    with pytest.raises(KefuError):
        grade(mock_server, inputs, out, **settings)
    assert finished_lines(out) == 0  # one of two grades stored: the line is not finished
    parsed.clear()
    done = grade(mock_server, inputs, out, **settings)
    assert parsed == [1] and (done.summary.graded, done.summary.skipped) == (1, 1)
    assert finished_lines(out) == 1


def valid_reply() -> dict[str, Any]:
    from pipeline.rubric.load import load_rubric

    return {c.id: {"evidence": [], "reasoning": "无", "score": c.points[0]} for c in load_rubric(RUBRIC).criteria()}


def test_exports_are_rewritten_when_a_file_is_missing_or_the_rubric_changed(
        mock_server: MockServer, tmp_path: Path) -> None:
    from pipeline.outputs.exports import refresh_outputs
    from pipeline.rubric.load import load_rubric
    from pipeline.store.store import Store

    inputs = write(tmp_path / "chats.jsonl", [chat(0), chat(1)])
    out = tmp_path / "out"
    first = grade(mock_server, inputs, out)
    rubric = load_rubric(RUBRIC)
    with Store.open(out) as store:
        assert not refresh_outputs(store, rubric, out).written
        first.grades_jsonl.unlink()
        again = refresh_outputs(store, rubric, out)
        assert again.written and again.grades_jsonl.exists() and again.dimension_means == first.dimension_means
        capped = rubric.model_copy(update={"name": rubric.name + "（改）"})  # e.g. a hook edited in the YAML
        assert refresh_outputs(store, capped, out).written
        assert not refresh_outputs(store, capped, out).written
        store.save_transcript_meta(transcript_id="c000", content_hash="x", platform=None, shop=None, agent_id=None,
                                   started_at=None, n_turns=2, source=None, checks=None)
        assert refresh_outputs(store, capped, out).written  # metadata (checks) changed
