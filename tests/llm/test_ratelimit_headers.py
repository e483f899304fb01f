"""OpenAI's rate-limit headers (pipeline.llm.ratelimit_headers) and the token bucket (pipeline.llm.token_bucket)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.llm.ratelimit_headers import LimitReading, format_duration, limit_headers, parse_duration, read_limit
from pipeline.llm.token_bucket import TokenBucket


@pytest.mark.parametrize(("text", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1.5s", 1.5), ("1h2m3.5s", 3723.5), ("250us", 0.00025),
    ("0s", 0.0), ("2", 2.0), ("0.75", 0.75),
])
def test_openai_durations_are_read(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "1x", "1s2", "-1s", "m1s", "nan", "inf", "1s 2s", "-3"])
def test_unreadable_durations_are_none(text: str) -> None:
    assert parse_duration(text) is None


@pytest.mark.parametrize(("seconds", "text"), [(0.02, "20ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"),
                                               (3723.5, "1h2m3.5s"), (0, "0ms")])
def test_durations_are_written_as_openai_does(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.floats(min_value=0, max_value=100_000, allow_nan=False))
def test_a_written_duration_reads_back_to_the_millisecond(seconds: float) -> None:
    back = parse_duration(format_duration(seconds))
    assert back is not None and abs(back - seconds) <= 0.0005 + 1e-9 * seconds


@given(st.text(max_size=12))
def test_any_text_reads_as_a_duration_or_none(text: str) -> None:
    seconds = parse_duration(text)
    assert seconds is None or seconds >= 0


def test_a_reading_gives_the_rate_unless_the_bucket_is_full() -> None:
    headers = limit_headers("requests", 60, 30, 30.0)
    assert headers == {"x-ratelimit-limit-requests": "60", "x-ratelimit-remaining-requests": "30",
                       "x-ratelimit-reset-requests": "30s"}
    reading = read_limit(headers, "requests")
    assert reading == LimitReading(60, 30, 30.0) and reading.rate == 1.0  # 30 taken, back in 30 s
    assert read_limit(headers, "tokens") is None
    assert read_limit(limit_headers("tokens", 1000, 1000, 0), "tokens") == LimitReading(1000, 1000, 0)
    assert LimitReading(1000, 1000, 0).rate is None  # full: says nothing about the rate
    assert read_limit({**headers, "x-ratelimit-reset-requests": "soon"}, "requests") is None
    assert read_limit({**headers, "x-ratelimit-limit-requests": "0"}, "requests") is None


@given(st.dictionaries(st.sampled_from(["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                                        "x-ratelimit-reset-tokens"]), st.text(max_size=10)))
def test_any_header_values_read_as_a_sane_limit_or_none(headers: dict[str, str]) -> None:
    reading = read_limit(headers, "tokens")
    assert reading is None or (reading.limit > 0 and 0 <= reading.remaining <= reading.limit and reading.reset >= 0)


def test_a_token_bucket_bursts_then_refills_at_its_rate() -> None:
    bucket = TokenBucket(5, 2.0, now=0.0)
    for _ in range(5):
        assert bucket.wait_for(1, 0.0) == 0
        bucket.take(1, 0.0)
    assert bucket.remaining(0.0) == 0 and bucket.wait_for(1, 0.0) == 0.5
    assert bucket.seconds_to_full(0.0) == 2.5
    bucket.take(3, 0.0)  # owed: the refill pays it first
    assert bucket.wait_for(1, 1.0) == 1.0 and bucket.remaining(1.0) == 0
    assert bucket.wait_for(50, 100.0) == 0  # a cost over capacity waits for a full bucket only
    assert bucket.refill(100.0) == 5
