"""Hung requests and the adaptive timeout (pipeline.llm.latencies, pipeline.llm.pacing), against the loopback server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import GradeChats
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import TransientLLMError
from pipeline.grading.settings import load_settings
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.latencies import HUNG_FLOOR, TIMEOUT_CAP, TIMEOUT_FLOOR, TIMEOUT_START, RecentLatencies
from pipeline.llm.pacing import Pacer
from pipeline.models.transcript import Transcript
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Delay

HUNG = 8.0  # seconds a hung request takes here: far over the 20 ms of the others, even on a loaded machine


def test_the_latencies_say_when_a_request_is_hung_and_the_timeout() -> None:
    recent = RecentLatencies()
    assert recent.hung_after() is None and recent.timeout() == TIMEOUT_START  # too few replies to say
    for _ in range(9):
        recent.add(2.0)
    assert recent.hung_after() is None
    recent.add(2.0)
    assert recent.p95 == 2.0 and recent.hung_after() == 8.0 and recent.timeout() == TIMEOUT_FLOOR
    for _ in range(200):
        recent.add(0.01)
    assert recent.hung_after() == HUNG_FLOOR  # never hung after less than a second
    for _ in range(200):
        recent.add(100.0)
    assert recent.timeout() == TIMEOUT_CAP


@given(st.lists(st.floats(min_value=0, max_value=10_000), min_size=10, max_size=300))
def test_the_timeout_stays_between_its_floor_and_cap_and_above_the_hung_mark(latencies: list[float]) -> None:
    recent = RecentLatencies()
    for seconds in latencies:
        recent.add(seconds)
    hung_after = recent.hung_after()
    assert hung_after is not None and TIMEOUT_FLOOR <= recent.timeout() <= TIMEOUT_CAP
    assert recent.p95 is not None and recent.p95 <= max(latencies)


def test_no_timeout_set_means_an_adaptive_one() -> None:
    key = {"OPENAI_API_KEY": "sk-test"}  # a remote endpoint needs one before anything is sent
    assert load_settings(environ=key).endpoint().adaptive_timeout
    set_one = load_settings(overrides={"timeout": 45.0}, environ=key).endpoint()
    assert not set_one.adaptive_timeout and set_one.timeout == 45.0


def chats(n: int) -> list[Transcript]:
    return [Transcript.model_validate({"id": f"c{i:02d}", "turns": [
        {"role": "customer", "text": f"第{i}单什么时候发货？"}, {"role": "agent", "text": "亲，今天发货哦"}]})
        for i in range(n)]


def test_hung_requests_stop_holding_the_window_so_other_chats_keep_moving(tmp_path: Path,
                                                                         grade_chats: GradeChats) -> None:
    """A window of 2 (as after refusals) with 8 workers: two requests hang, the others go on around them."""
    async def go() -> tuple[int, int, int]:
        async with MockServer(latency=0.02) as server:
            # 12 ordinary replies (the latencies are known after 10), then two that hang
            server.script(*[Delay(seconds=0)] * 12, Delay(seconds=HUNG), Delay(seconds=HUNG))
            pacer = Pacer(2)
            summary = await grade_chats(server.base_url, pacer, tmp_path, chats(30), concurrency=8)
            records = server.requests
            hung = records[12:14]
            assert all(r.finished_monotonic is not None and r.status == 200 for r in hung)
            start = max(r.arrived_monotonic for r in hung)
            end = min(r.finished_monotonic or 0.0 for r in hung)
            # requests that were sent, and answered, while both hung ones were still out
            around = sum(1 for r in records[14:] if start < r.arrived_monotonic and (r.finished_monotonic or 0) < end)
            return summary.graded, pacer.hung, around

    graded, hung, around = asyncio.run(go())
    assert graded == 30 and hung == 2
    assert around > 0  # with the hung ones holding both places, none could have been


def test_without_a_set_timeout_a_request_far_slower_than_the_others_times_out() -> None:
    async def go() -> None:
        async with MockServer(latency=0.01) as server:
            server.script(*[Delay(seconds=0)] * 10, Delay(seconds=HUNG))
            pacer = Pacer(4, latencies=RecentLatencies(timeout_floor=0.5))
            client = LLMClient(Endpoint(server.base_url, "k", adaptive_timeout=True), pacer=pacer)
            fixed = LLMClient(Endpoint(server.base_url, "k", timeout=60.0), pacer=Pacer(4, latencies=pacer.latencies))

            async def chat(on: LLMClient) -> None:
                await on.chat([{"role": "user", "content": "在吗"}], model="m", response_format={"type": "json_object"},
                              temperature=None, seed=None, max_tokens=None)
            try:
                for _ in range(10):
                    await chat(client)
                assert pacer.latencies.timeout() < HUNG  # 10 × a few ms (at least the floor given): not 60 s
                with pytest.raises(TransientLLMError, match="did not answer in time"):
                    await chat(client)
                server.script(Delay(seconds=1.0))
                await chat(fixed)  # a timeout that was set is kept, whatever the latencies
            finally:
                await client.close()
                await fixed.close()

    asyncio.run(go())
