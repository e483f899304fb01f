"""Pacing under rate limits: the shared window (pipeline.llm.pacing) and refusals that do not use up attempts
(pipeline.llm.retry), first on their own, then against a loopback server that enforces a real rate limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.errors import LLMError
from pipeline.grading.grader import Grader, Sampling
from pipeline.grading.prompting import PromptSet
from pipeline.grading.runner import RunOptions, RunSummary, run_grading
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.pacing import Pacer
from pipeline.llm.retry import RetryPolicy
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.rubric.model import Rubric, load_rubric
from pipeline.store.store import Store
from pipeline.testing.mockserver import Fault, MockServer, openai_error

REPO = Path(__file__).resolve().parent.parent


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_refusal_cuts_the_window_once_per_round_trip_and_successes_grow_it_back() -> None:
    async def go() -> None:
        clock = Clock()
        pacer = Pacer(10, clock=clock)
        sent = [await pacer.acquire() for _ in range(10)]  # all sent at t = 0
        assert pacer.in_flight == 10 and pacer.window == 10
        clock.now = 1.0
        for at in sent:  # the whole burst comes back 429: one cut, not ten
            pacer.release(at, "slow_down")
        assert pacer.window == 7 and pacer.refusals == 10 and pacer.in_flight == 0
        clock.now = 2.0
        again = await pacer.acquire()  # sent after the cut: its refusal cuts again
        clock.now = 3.0
        pacer.release(again, "slow_down")
        assert pacer.window == 4 and pacer.lowest == 4
        for _ in range(200):
            pacer.release(await pacer.acquire(), "ok")
        assert pacer.window == 10  # back to the ceiling, and never above it
        for _ in range(30):  # a limit that never lets up: down to one request at a time, never zero
            clock.now += 1
            pacer.release(await pacer.acquire(), "slow_down")
        assert pacer.window == 1 and pacer.lowest == 1
        pacer.release(await pacer.acquire(), "failed")  # a 500 or a timeout says nothing about the rate
        assert pacer.window == 1

    asyncio.run(go())


def test_no_more_requests_in_flight_than_the_window() -> None:
    async def go() -> int:
        clock = Clock()
        pacer = Pacer(8, clock=clock)
        pacer.release(await pacer.acquire(), "slow_down")  # window 8 -> 5
        assert pacer.window == 5
        most = 0

        async def request() -> None:
            nonlocal most
            at = await pacer.acquire()
            most = max(most, pacer.in_flight)
            assert pacer.in_flight <= pacer.window
            await asyncio.sleep(0.001)
            pacer.release(at, "failed")  # keeps the window where it is

        await asyncio.gather(*(request() for _ in range(40)))
        assert pacer.in_flight == 0
        return most

    assert asyncio.run(go()) == 5  # reached, never exceeded


def test_retry_after_holds_back_every_new_request() -> None:
    async def go() -> None:
        pacer = Pacer(4)
        first = await pacer.acquire()
        other = await pacer.acquire()
        pacer.release(first, "slow_down", retry_after=0.05)
        pause_ends = first + 0.05
        pacer.release(other, "ok")
        assert await pacer.acquire() >= pause_ends  # a request that was not refused waits too

    asyncio.run(go())


def test_a_cancelled_wait_gives_its_place_back() -> None:
    async def go() -> None:
        clock = Clock()
        pacer = Pacer(2, clock=clock)
        pacer.release(await pacer.acquire(), "slow_down")  # window 2 -> 1
        holder = await pacer.acquire()
        waiting = asyncio.create_task(pacer.acquire())
        await asyncio.sleep(0)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        pacer.release(holder, "failed")
        assert pacer.in_flight == 0
        await asyncio.wait_for(pacer.acquire(), timeout=5)  # the place is free again
        assert pacer.in_flight == 1

    asyncio.run(go())


def test_only_a_rate_limit_or_an_overload_slows_the_window(mock_server: MockServer) -> None:
    too_large = Fault(status=429, body=openai_error("Request too large for gpt-4o-mini on tokens per min (TPM)",
                                                    "tokens", code="rate_limit_exceeded"))
    mock_server.script(too_large, Fault.server_error(500), Fault.rate_limited(retry_after=None),
                       Fault.server_error(503))

    async def go() -> list[tuple[int, int]]:
        pacer = Pacer(10)
        client = LLMClient(Endpoint(mock_server.base_url, "k"), pacer=pacer)
        seen = []
        try:
            for _ in range(4):
                with pytest.raises(LLMError):
                    await client.chat([{"role": "user", "content": "在吗"}], model="m",
                                      response_format={"type": "json_object"}, temperature=None, seed=None,
                                      max_tokens=None)
                seen.append((pacer.refusals, pacer.window))
        finally:
            await client.close()
        assert pacer.in_flight == 0
        return seen

    # too large for the TPM limit, and a 500: no change; then a 429 and a 503: one cut each (each sent after the last)
    assert asyncio.run(go()) == [(0, 10), (0, 10), (1, 7), (2, 4)]


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")


def chats(n: int) -> list[Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return [Transcript(id=f"c{i:03d}", turns=[
        Turn(role=Role.customer, text=f"第{i}单什么时候发货？", time=t0 + timedelta(minutes=i)),
        Turn(role=Role.agent, text="亲，您好，今天下单今天发货哦", time=t0 + timedelta(minutes=i, seconds=8)),
    ]) for i in range(n)]


def grade_against_a_rate_limit(rubric: Rubric, out: Path, *, paced: bool) -> tuple[RunSummary, dict[int, int]]:
    """40 chats at 16 in flight against a server that takes 4 requests per 0.25 s and says Retry-After."""
    async def go() -> tuple[RunSummary, dict[int, int]]:
        async with MockServer(latency=0.02, rate_limit=(4, 0.25), rate_limit_retry_after=True,
                              record_bodies=False) as server:
            client = LLMClient(Endpoint(server.base_url, "k"), pacer=Pacer(16) if paced else None)
            # Unpaced is the behaviour before pacing: every refusal counts against the attempts.
            retry = RetryPolicy(attempts=3) if paced else RetryPolicy(attempts=3, slow_down_attempts=0)
            grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(), retry=retry)
            try:
                with Store.open(out) as store:
                    summary = await run_grading(chats(40), grader=grader, store=store,
                                                options=RunOptions(concurrency=16), rejects_path=out / "rejects.jsonl")
            finally:
                await client.close()
            return summary, server.stats().by_status

    return asyncio.run(go())


def test_a_rate_limited_backlog_is_slowed_down_not_left_unscored(rubric: Rubric, tmp_path: Path) -> None:
    summary, by_status = grade_against_a_rate_limit(rubric, tmp_path, paced=True)
    assert summary.graded == 40 and summary.unscored == 0
    assert by_status[200] == 40
    assert summary.slow_down == by_status[429] > 0
    assert summary.lowest_in_flight is not None and summary.lowest_in_flight < 16


def test_without_pacing_the_same_limit_leaves_chats_unscored(rubric: Rubric, tmp_path: Path) -> None:
    """The scenario above is one that bites: refusals that each count, at full concurrency, exhaust attempts."""
    summary, by_status = grade_against_a_rate_limit(rubric, tmp_path, paced=False)
    assert summary.unscored > 0 and summary.graded + summary.unscored == 40
    assert summary.slow_down == 0  # nothing paced, nothing reported
    assert by_status[429] > 40
