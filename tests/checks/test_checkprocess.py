"""Service checks in a child process: the same stored bytes as in-process, and nothing lost when it fails."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from pipeline.checks.checker import ServiceChecker, record_json
from pipeline.checks.process import CheckProcess
from pipeline.cli.console import log_to
from pipeline.grading.grader import Grader
from pipeline.grading.job import CHECK_PROCESS_MIN_BYTES, CHECK_PROCESS_MIN_TRANSCRIPTS, use_check_process
from pipeline.grading.prompting import PromptSet, transcript_hash
from pipeline.grading.redaction import RedactionConfig
from pipeline.grading.runner import RunOptions, RunSummary, run_grading
from pipeline.inputs.transcripts import read_transcripts
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Transcript
from pipeline.rubric.load import load_rubric
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chats() -> list[Transcript]:
    """Every eval-set chat (timestamps, satisfaction, banned phrases, PII), three times under other ids."""
    own = [t for t in read_transcripts([REPO / "eval_sets" / "ecommerce_cs.jsonl"]) if isinstance(t, Transcript)]
    return [t.model_copy(update={"id": f"{t.id}-{k}"}) for k in range(3) for t in own]


@pytest.fixture(scope="module")
def checker() -> ServiceChecker:
    return ServiceChecker.load()


def in_process(checker: ServiceChecker, chats: list[Transcript]) -> list[str]:
    return [record_json(checker.check(t, transcript_hash(t)).record()) for t in chats]


def test_child_records_are_byte_identical(chats: list[Transcript], checker: ServiceChecker) -> None:
    async def go() -> list[str]:
        child = CheckProcess(checker)
        try:
            futures = [await child.submit(t, transcript_hash(t)) for t in chats]
            records = list(await asyncio.gather(*futures))
            assert child.checked_here == 0  # every record came from the child
            return records
        finally:
            await child.close()

    assert asyncio.run(go()) == in_process(checker, chats)


def test_a_dead_child_is_replaced_by_in_process_checks(chats: list[Transcript], checker: ServiceChecker,
                                                       tmp_path: Path) -> None:
    """Killed mid-run: what it had not answered, and everything after, is checked here, with the same bytes;
    the warning lands in OUT/kefu.log, as the CLI sets it up."""
    kefu_log = logging.getLogger("kefu")
    saved = (kefu_log.handlers[:], kefu_log.level, kefu_log.propagate)
    log_to(tmp_path)

    async def go() -> list[str]:
        child = CheckProcess(checker)
        try:
            first = [await child.submit(t, transcript_hash(t)) for t in chats[:10]]
            await asyncio.gather(*first)
            assert child.pid is not None
            os.kill(child.pid, signal.SIGKILL)
            rest = [await child.submit(t, transcript_hash(t)) for t in chats[10:]]
            records = [*(f.result() for f in first), *await asyncio.gather(*rest)]
            assert child.checked_here == len(chats) - 10
            return records
        finally:
            await child.close()

    try:
        assert asyncio.run(go()) == in_process(checker, chats)
    finally:
        for handler in kefu_log.handlers:
            handler.close()
        kefu_log.handlers[:], kefu_log.level, kefu_log.propagate = saved
    logged = (tmp_path / "kefu.log").read_text(encoding="utf-8")
    assert "kefu.checks" in logged and "the check process stopped (exit code -9)" in logged  # SIGKILL, named


def test_with_its_input_ended_the_child_answers_everything_and_exits_before_close(
        chats: list[Transcript], checker: ServiceChecker, tmp_path: Path) -> None:
    """`end_input` when the run has read its last chat: the child's exit overlaps the last requests, quietly."""
    kefu_log = logging.getLogger("kefu")
    saved = (kefu_log.handlers[:], kefu_log.level, kefu_log.propagate)
    log_to(tmp_path)

    async def go() -> tuple[list[str], int]:
        child = CheckProcess(checker)
        try:
            futures = [await child.submit(t, transcript_hash(t)) for t in chats]
            child.end_input()
            records = list(await asyncio.gather(*futures))
            assert child._proc is not None
            code = await asyncio.wait_for(child._proc.wait(), timeout=60)  # gone before close() is called
            assert child.checked_here == 0
            return records, code
        finally:
            await child.close()

    try:
        records, code = asyncio.run(go())
    finally:
        for handler in kefu_log.handlers:
            handler.close()
        kefu_log.handlers[:], kefu_log.level, kefu_log.propagate = saved
    assert records == in_process(checker, chats) and code == 0
    assert "check process" not in (tmp_path / "kefu.log").read_text(encoding="utf-8")  # an ordinary end: no warning


def test_closing_without_a_submission_starts_no_process(checker: ServiceChecker) -> None:
    async def go() -> int | None:
        child = CheckProcess(checker)
        await child.close()
        return child.pid

    assert asyncio.run(go()) is None


def grade_all(server: MockServer, items: list[Transcript], out: Path, *, check_process: bool,
              redact: bool = False, concurrency: int = 8) -> RunSummary:
    async def go() -> RunSummary:
        client = LLMClient(Endpoint(server.base_url, "k"))
        grader = Grader(load_rubric(REPO / "rubric" / "ecommerce_cs.yaml"), PromptSet("zh"), client,
                        model="mock-model", sampling=Sampling(), retry=RetryPolicy(attempts=2))
        try:
            with Store.open(out) as store:
                return await run_grading(
                    items, grader=grader, store=store, options=RunOptions(concurrency=concurrency),
                    rejects_path=out / "rejects.jsonl", checker=ServiceChecker.load(),
                    redaction=RedactionConfig() if redact else None, check_process=check_process)
        finally:
            await client.close()

    return asyncio.run(go())


def stored_checks(out: Path) -> dict[str, str]:
    with Store.open(out) as store:
        rows = store._db.execute("SELECT id, checks FROM transcripts").fetchall()
    return dict(rows)


@pytest.mark.parametrize("redact", [False, True])
def test_a_run_stores_the_same_checks_either_way(mock_server: MockServer, chats: list[Transcript],
                                                  tmp_path: Path, redact: bool) -> None:
    """With redaction the checks still see the original text, in the child as in-process."""
    here = grade_all(mock_server, chats, tmp_path / "here", check_process=False, redact=redact)
    there = grade_all(mock_server, chats, tmp_path / "child", check_process=True, redact=redact)
    assert here.graded == there.graded == len(chats)
    assert stored_checks(tmp_path / "child") == stored_checks(tmp_path / "here")
    assert all(stored_checks(tmp_path / "child").values())


def test_cancelled_run_stores_every_paid_grade_with_its_checks(chats: list[Transcript], tmp_path: Path) -> None:
    """Ctrl-C while grades wait for their checks: each grade that came back is stored, with its
    transcript's metadata and checks, so a resume pays for none of them again."""
    with MockServer(latency=0.2) as server:
        async def go() -> None:
            run = asyncio.ensure_future(_grade_in_loop(server, chats, tmp_path))
            while len(server.requests) < 30:
                await asyncio.sleep(0.01)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run

        asyncio.run(go())
        with Store.open(tmp_path) as store:
            graded = {row[0] for row in store._db.execute("SELECT transcript_id FROM grades")}
        checks = stored_checks(tmp_path)
        assert graded, "the run was cancelled before any grade came back"
        assert all(checks.get(tid) for tid in graded)
        sent = len(server.requests)
        summary = grade_all(server, chats, tmp_path, check_process=True)
        assert summary.skipped == len(graded)
        assert len(server.requests) - sent == len(chats) - len(graded)


async def _grade_in_loop(server: MockServer, items: list[Transcript], out: Path) -> None:
    client = LLMClient(Endpoint(server.base_url, "k"))
    grader = Grader(load_rubric(REPO / "rubric" / "ecommerce_cs.yaml"), PromptSet("zh"), client,
                    model="mock-model", sampling=Sampling(), retry=RetryPolicy(attempts=2))
    try:
        with Store.open(out) as store:
            await run_grading(items, grader=grader, store=store, options=RunOptions(concurrency=8),
                              rejects_path=out / "rejects.jsonl", checker=ServiceChecker.load(),
                              check_process=True)
    finally:
        await client.close()


@pytest.mark.parametrize(("expected", "size", "cpus", "local", "want"), [
    (CHECK_PROCESS_MIN_TRANSCRIPTS, 0, 2, False, True),
    (CHECK_PROCESS_MIN_TRANSCRIPTS - 1, 10**9, 2, False, False),  # counted: the count decides, not the bytes
    (None, CHECK_PROCESS_MIN_BYTES, 2, False, True),  # not counted (CSV, chat logs): the input's size decides
    (None, CHECK_PROCESS_MIN_BYTES - 1, 2, False, False),
    (100_000, 0, 1, False, False),  # one core: the child would take the requests' core
    (100_000, 0, 8, True, False),  # the embedded model uses every core
])
def test_when_the_checks_go_to_a_child(expected: int | None, size: int, cpus: int, local: bool, want: bool) -> None:
    assert use_check_process(expected, input_bytes=size, cpus=cpus, local=local) is want
