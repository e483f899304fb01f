"""Pacing under rate limits: the shared window (pipeline.llm.pacing) and refusals that do not use up attempts
(pipeline.llm.retry), first on their own, then against a loopback server that enforces a real rate limit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import GradeChats
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import EndpointDownError, LLMError
from pipeline.grading.runner import RunSummary
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.pacing import Pacer
from pipeline.llm.rate_gate import RateGate
from pipeline.llm.ratelimit_headers import LimitKind, LimitReading
from pipeline.llm.retry import RetryPolicy
from pipeline.llm.token_bucket import TokenBucket
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.testing.mock_limits import BucketLimit
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Fault, openai_error


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

    async def go() -> list[tuple[int, int, bool]]:
        pacer = Pacer(10)
        client = LLMClient(Endpoint(mock_server.base_url, "k"), pacer=pacer)
        seen = []
        try:
            for _ in range(4):
                with pytest.raises(LLMError):
                    await client.chat([{"role": "user", "content": "在吗"}], model="m",
                                      response_format={"type": "json_object"}, temperature=None, seed=None,
                                      max_tokens=None)
                seen.append((pacer.refusals, pacer.window, pacer.gates["requests"].rate is not None))
        finally:
            await client.close()
        assert pacer.in_flight == 0
        return seen

    # too large for the TPM limit, and a 500: no change; a 429: the requests are paced to a rate from now on,
    # the window stays; a 503 (an overloaded server): the window is cut
    assert asyncio.run(go()) == [(0, 10, False), (0, 10, False), (1, 10, True), (2, 7, True)]


def chats(n: int) -> list[Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return [Transcript(id=f"c{i:03d}", turns=[
        Turn(role=Role.customer, text=f"第{i}单什么时候发货？", time=t0 + timedelta(minutes=i)),
        Turn(role=Role.agent, text="亲，您好，今天下单今天发货哦", time=t0 + timedelta(minutes=i, seconds=8)),
    ]) for i in range(n)]


def grade_against_a_rate_limit(grade_chats: GradeChats, out: Path, *, paced: bool, pacer: Pacer | None = None,
                               **limit: Any) -> tuple[RunSummary, dict[int, int]]:
    """40 chats at 16 in flight against a server that takes 4 requests per 0.25 s and says Retry-After
    (or has the `limit` given)."""
    async def go() -> tuple[RunSummary, dict[int, int]]:
        async with MockServer(latency=0.02, record_bodies=False,
                              **(limit or {"rate_limit": (4, 0.25), "rate_limit_retry_after": True})) as server:
            # Unpaced is the behaviour before pacing: every refusal counts against the attempts.
            retry = RetryPolicy(attempts=3) if paced else RetryPolicy(attempts=3, slow_down_attempts=0)
            summary = await grade_chats(server.base_url, (pacer or Pacer(16)) if paced else None, out, chats(40),
                                        retry=retry)
            return summary, server.stats().by_status

    return asyncio.run(go())


def test_a_rate_limited_backlog_is_slowed_down_not_left_unscored(grade_chats: GradeChats, tmp_path: Path) -> None:
    pacer = Pacer(16)
    summary, by_status = grade_against_a_rate_limit(grade_chats, tmp_path, paced=True, pacer=pacer)
    assert summary.graded == 40 and summary.unscored == 0
    assert by_status[200] == 40
    assert summary.slow_down == by_status[429] > 0
    assert pacer.gates["requests"].rate is not None  # paced to a rate, not by fewer in flight
    assert summary.lowest_in_flight == 16


def test_without_pacing_the_same_limit_leaves_chats_unscored(grade_chats: GradeChats, tmp_path: Path) -> None:
    """The scenario above is one that bites: refusals that each count, at full concurrency, exhaust attempts.

    How it bites depends on timing: usually some chats end unscored; on a slow machine the first grades
    can use up their attempts before any request got through, and the run stops as for a dead endpoint.
    """
    try:
        summary, by_status = grade_against_a_rate_limit(grade_chats, tmp_path, paced=False)
    except EndpointDownError as exc:
        assert "429" in str(exc)  # stopped by the refusals themselves: it bit
        return
    assert summary.unscored > 0 and summary.graded + summary.unscored == 40
    assert summary.slow_down == 0  # nothing paced, nothing reported
    assert by_status[429] > 40


def serve(bucket: TokenBucket, demand: int, gate: RateGate, *, step: float = 0.001) -> int:
    """`demand` requests sent through `gate` as fast as it lets them, to an endpoint limited by `bucket`, on a
    simulated clock (1 ms a tick); returns how many were refused."""
    now, accepted, refused = 0.0, 0, 0
    while accepted < demand:
        now += max(step, gate.reserve(1.0, now))
        gate.sent(now)
        if bucket.wait_for(1.0, now) > 0:
            refused += 1
            gate.refused(now, now)
        else:
            bucket.take(1.0, now)
            accepted += 1
            gate.answered(now, now)
    return refused


def test_without_headers_the_rate_is_measured_between_refusals() -> None:
    gate = RateGate()
    endpoint = TokenBucket(20, 10.0, now=0.0)  # a burst of 20, then 10 a second
    refused = serve(endpoint, 200, gate)
    # measured at 10 between refusals, then probed upwards by 1% a second until the next one refuses
    assert 10.0 * 0.99 <= gate.rate <= 10.0 * 1.07 and not gate.from_headers
    # the burst, then the first second's guesses: some dozens of refusals for 200 requests, not one in two
    assert refused < 100


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(12)))
def test_a_measurement_waits_for_every_answer_between_its_refusals_in_any_order(order: list[int]) -> None:
    """A stalled event loop hands over a pile of answers in any order; a refusal that arrives after the one
    closing the interval must still be counted as a refusal, not as a request that got through."""
    gate = RateGate()
    gate.sent(0.0)
    gate.refused(0.0, 0.0)  # the bucket was empty at 0.0
    sends = [round(0.1 * (i + 1), 1) for i in range(12)]  # 0.1 … 1.2
    for at in sends:
        gate.sent(at)
    refused = {0.5, 0.6, 1.2}  # and empty again at 1.2, more than a second later
    for step, i in enumerate(order):
        assert gate.known_rate is None  # not before every answer in (0.0, 1.2] is in
        answer = gate.refused if sends[i] in refused else gate.answered
        answer(sends[i], 1.3 + 0.01 * step)
    assert gate.known_rate == pytest.approx((12 - 3) / 1.2)  # what got through between the two empty buckets


def test_a_request_that_hangs_does_not_hold_up_the_measurement_for_ever() -> None:
    gate = RateGate()
    for at in (0.0, 0.5, 1.0, 1.5):
        gate.sent(at)
    gate.refused(0.0, 0.0)
    gate.refused(1.5, 1.51)
    gate.answered(1.0, 2.0, unanswered_after=3.0)
    assert gate.known_rate is None  # the request sent at 0.5 may still be refused
    gate.sent(4.0)
    gate.answered(4.0, 4.0, unanswered_after=3.0)  # 3.5 s without an answer: hung, so it got through
    assert gate.known_rate == pytest.approx(2 / 1.5)


def test_a_refusal_that_comes_late_still_finds_every_send_it_measures_over() -> None:
    gate = RateGate()
    gate.sent(0.0)
    gate.refused(0.0, 0.0)
    sends = [round(0.1 * i, 1) for i in range(1, 26)]  # 0.1 … 2.5
    for at in sends:
        gate.sent(at)
    for at in sends[:-1]:
        gate.answered(at, 3.0)
    for at in (5.0, 6.0):  # later requests, answered at once, while the one sent at 2.5 waits for its answer
        gate.sent(at)
        gate.answered(at, at)
    gate.refused(2.5, 6.0)  # a 429 that a stalled event loop handed over late
    assert gate.known_rate == pytest.approx(24 / 2.5)  # not a rate from the few sends kept after the horizon


def test_a_guessed_rate_falls_as_the_refusals_of_a_burst_come_in_and_does_not_climb_under_them() -> None:
    gate = RateGate()
    for _ in range(128):  # a first burst at full concurrency against a bucket of 50
        gate.sent(0.0)
    for i in range(78):
        gate.refused(0.0, 0.001 * (i + 1))
    assert gate.rate == pytest.approx(50.0)  # not 127, what the first refusal alone would suggest
    gate.reserve(1.0, 0.5)
    assert gate.rate == pytest.approx(50.0)  # refused within the last second: no probing upwards
    for _ in range(50):
        gate.answered(0.0, 1.0)
    gate.reserve(1.0, 1.6)  # nothing refused for over a second: a guess climbs to find a limit set too low
    assert gate.rate is not None and gate.rate > 50.0


def test_headers_give_the_bucket_and_its_rate() -> None:
    gate = RateGate()
    gate.observe(LimitReading(limit=60, remaining=60, reset=0.0), now=0.0)
    assert gate.bucket is None  # a full bucket says nothing yet: nothing to pace
    gate.observe(LimitReading(limit=60, remaining=30, reset=30.0), now=1.0)
    # 30 taken out, full again in 30 s: one a second, give or take the rounding of `remaining`
    assert gate.from_headers and gate.rate == pytest.approx(1.0, abs=0.02)
    assert gate.bucket is not None and gate.bucket.capacity == 60
    waits = [gate.reserve(1.0, 1.0) for _ in range(31)]
    assert waits[:30] == [0.0] * 30 and waits[30] == pytest.approx(1.0, abs=0.02)  # the 30 left at once, then 1/s
    gate.observe(LimitReading(limit=60, remaining=5, reset=55.0), now=2.0)  # the endpoint says fewer are left
    assert gate.bucket.level <= 5


def test_headers_after_a_learned_start_keep_the_turns_already_given() -> None:
    gate = RateGate(rate=50.0)  # a rerun starts at the rate the last run learned
    waits = [gate.reserve(1.0, 0.0) for _ in range(100)]  # a full window queued at 50 a second: about 2 s
    assert waits[-1] == pytest.approx(100 / 50, abs=0.05)
    gate.observe(LimitReading(limit=50, remaining=49, reset=0.02), now=0.02)  # the first reply: a full bucket
    # The 99 still queued take the endpoint's 49 and 50 more at 50 a second: the next waits a second behind them
    # (not 0 s, as a bucket started at the 49 left would let it, and the rest of the window after it).
    assert gate.from_headers and gate.reserve(1.0, 0.02) == pytest.approx(51 / 50, abs=0.01)


def test_a_paced_run_against_a_request_bucket_without_headers_learns_a_rate(grade_chats: GradeChats,
                                                                            tmp_path: Path) -> None:
    pacer = Pacer(16)
    summary, by_status = grade_against_a_rate_limit(grade_chats, tmp_path, paced=True, pacer=pacer,
                                                    request_bucket=BucketLimit(5, 40.0))
    assert summary.graded == 40 and summary.unscored == 0 and by_status[200] == 40
    assert by_status[429] == summary.slow_down > 0
    assert pacer.gates["requests"].rate is not None and not pacer.gates["requests"].from_headers


@pytest.mark.parametrize(("kind", "bucket"), [("requests", BucketLimit(5, 40.0)),
                                             ("tokens", BucketLimit(60_000, 200_000.0))])
def test_a_paced_run_against_a_bucket_with_headers_learns_its_rate(grade_chats: GradeChats, tmp_path: Path,
                                                                   kind: LimitKind, bucket: BucketLimit) -> None:
    pacer = Pacer(16)
    summary, by_status = grade_against_a_rate_limit(
        grade_chats, tmp_path, paced=True, pacer=pacer, rate_limit_headers=True, rate_limit_retry_after=True,
        **{"request_bucket" if kind == "requests" else "token_bucket": bucket})
    assert summary.graded == 40 and summary.unscored == 0 and by_status[200] == 40
    gate, other = pacer.gates[kind], pacer.gates["tokens" if kind == "requests" else "requests"]
    assert gate.from_headers and gate.rate == pytest.approx(bucket.per_second, rel=0.25)
    assert other.rate is None  # no such limit, no pacing for it
    assert pacer.window == 16  # a rate limit is paced, not met by fewer in flight
    # a request's tokens are estimated from what the endpoint reported
    assert pacer.tokens.completion == pytest.approx(summary.completion_tokens / 40, rel=0.5)
    assert pacer.tokens.per_byte != 0.25  # no longer the guess
