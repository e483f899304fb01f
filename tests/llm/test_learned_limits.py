"""Learned rate limits kept between runs (pipeline.llm.learned_limits), and a rerun that starts at them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.grading.job import GradeJob, run_job
from pipeline.grading.settings import load_settings
from pipeline.llm.learned_limits import limits_path, load_learned_limits, save_learned_limits
from pipeline.llm.pacing import Limits, Pacer
from pipeline.models.transcript import Transcript
from pipeline.testing.mock_limits import BucketLimit
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]


def test_limits_are_kept_per_base_url_and_model(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    assert load_learned_limits("http://a/v1", "m", path) == Limits()  # no file yet
    save_learned_limits("http://a/v1/", "m", Limits(requests=2.5), path)
    save_learned_limits(None, "m", Limits(requests=1.0, tokens=100.0), path)
    assert load_learned_limits("http://a/v1", "m", path) == Limits(requests=2.5)  # trailing slash: same endpoint
    assert load_learned_limits("http://a/v1", "other", path) == Limits()
    assert load_learned_limits("https://api.openai.com/v1", "m", path) == Limits(1.0, 100.0)
    save_learned_limits("http://a/v1", "m", Limits(tokens=50.0), path)  # learned tokens only: requests stay
    assert load_learned_limits("http://a/v1", "m", path) == Limits(2.5, 50.0)
    save_learned_limits("http://a/v1", "m", Limits(), path)  # learned nothing: nothing changes
    assert load_learned_limits("http://a/v1", "m", path) == Limits(2.5, 50.0)
    text = path.read_text(encoding="utf-8")
    assert "http://a/v1 m" in json.loads(text)["limits"] and "key" not in text


def test_a_bucket_size_the_headers_said_is_kept_and_a_rerun_starts_with_it_full(tmp_path: Path) -> None:
    path = tmp_path / "limits.json"
    save_learned_limits("http://a/v1", "m", Limits(requests=50.0, requests_burst=60.0), path)
    save_learned_limits("http://a/v1", "m", Limits(tokens=900.0), path)  # tokens only: the requests' burst stays
    start = load_learned_limits("http://a/v1", "m", path)
    assert start == Limits(50.0, 900.0, 60.0, None)
    gate = Pacer(128, clock=lambda: 0.0, start=start).gates["requests"]
    assert [gate.reserve(1.0, 0.0) for _ in range(60)] == [0.0] * 60  # a rested bucket's burst, at once
    assert gate.reserve(1.0, 0.0) == pytest.approx(1 / 50)  # then the rate
    no_burst = Pacer(128, clock=lambda: 0.0, start=Limits(50.0)).gates["requests"]
    assert no_burst.reserve(1.0, 0.0) == pytest.approx(1 / 50)  # a rate learned from refusals: no burst known


def test_the_file_is_where_the_environment_says(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KEFU_LIMITS_FILE")
    monkeypatch.setenv("KEFU_CACHE_DIR", str(tmp_path / "cache"))
    assert limits_path() == tmp_path / "cache" / "rate_limits.json"
    monkeypatch.setenv("KEFU_LIMITS_FILE", str(tmp_path / "x.json"))
    assert limits_path() == tmp_path / "x.json"


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_an_unreadable_file_is_ignored_and_rewritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "limits.json"
    path.write_bytes(content)
    learned = load_learned_limits("http://a/v1", "m", path)
    assert all(rate is None or rate > 0 for rate in learned)
    save_learned_limits("http://a/v1", "m", Limits(requests=3.0), path)
    assert load_learned_limits("http://a/v1", "m", path).requests == 3.0


def chats(n: int) -> list[Transcript]:
    return [Transcript.model_validate({"id": f"c{i}", "turns": [
        {"role": "customer", "text": f"第{i}单什么时候发货？"}, {"role": "agent", "text": "亲，今天发货哦"}]})
        for i in range(n)]


def test_a_rerun_starts_at_the_rate_the_first_run_learned(tmp_path: Path, learned_limits_file: Path) -> None:
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(c.model_dump_json() + "\n" for c in chats(30)), encoding="utf-8")

    def grade(server: MockServer, out: str, **overrides: object) -> dict[int, int]:
        settings = load_settings(overrides={"base_url": server.base_url, "model": "mock-model", "concurrency": 16,
                                            **overrides}, environ={"OPENAI_API_KEY": "k"})
        job = GradeJob(inputs=[src], rubric_path=REPO / "rubric" / "ecommerce_cs.yaml", out_dir=tmp_path / out)
        before = server.stats().by_status
        asyncio.run(run_job(job, settings))
        after = server.stats().by_status
        return {status: n for status in after if (n := after[status] - before.get(status, 0))}

    with MockServer(latency=0.02, request_bucket=BucketLimit(4, 30.0), rate_limit_headers=True,
                    record_bodies=False) as server:
        first = grade(server, "first")
        assert first[200] == 30 and first.get(429, 0) > 0  # 16 sent at once into a burst of 4
        learned = load_learned_limits(server.base_url, "mock-model")
        assert learned.requests == pytest.approx(30.0, rel=0.25) and learned.tokens is None, learned
        server.rate_limit_headers = False  # the second run learns nothing from headers: it starts paced
        server.request_bucket = BucketLimit(4, 30.0 * 1.3)  # (a new, full bucket, with room for an estimate 30% high)
        second = grade(server, "second")
        # It starts with the burst of 4 the headers said, then paces: at most one refusal, when the first wave's
        # connections open and bunch its requests up at the endpoint after the pacer spaced them.
        assert second[200] == 30 and second.get(429, 0) <= 1, second
        assert learned.requests_burst == 4
        learned_limits_file.unlink()
        server.request_bucket = BucketLimit(4, 30.0 * 1.3)
        third = grade(server, "third")  # without the file it finds the limit by refusals again
        assert third.get(429, 0) > max(1, second.get(429, 0)), third
        save_learned_limits(server.base_url, "mock-model", Limits(requests=0.5))
        server.request_bucket = BucketLimit(4, 30.0 * 1.3)
        # --rpm overrides what was learned (at 0.5 a second the 30 chats would take a minute)
        assert grade(server, "fourth", rpm=30.0 * 1.3 * 60 * 0.8) == {200: 30}
