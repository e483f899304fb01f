"""The mock server's token-bucket limits and OpenAI's rate-limit headers, through the real openai client."""

from __future__ import annotations

import openai
import pytest

from pipeline.llm.ratelimit_headers import parse_duration, read_limit
from pipeline.testing.mock_limits import BucketLimit
from pipeline.testing.mockserver import MockServer

USER = [{"role": "user", "content": "在吗？我的快递到哪了" * 10}]  # 100 characters: 50 prompt tokens


def call(llm: openai.OpenAI) -> openai.types.chat.ChatCompletion:
    raw = llm.chat.completions.with_raw_response.create(model="m", messages=USER)  # type: ignore[arg-type]
    completion = raw.parse()
    completion.headers = dict(raw.headers)  # type: ignore[attr-defined]
    return completion


def test_a_request_bucket_takes_its_burst_then_refuses_with_headers_and_retry_after() -> None:
    with MockServer(request_bucket=BucketLimit(3, 0.01), rate_limit_headers=True,
                    rate_limit_retry_after=True) as server, \
            openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as llm:
        seen = [read_limit(call(llm).headers, "requests") for _ in range(3)]  # type: ignore[attr-defined]
        assert [reading.remaining for reading in seen if reading] == [2, 1, 0]
        assert seen[0] is not None and seen[0].limit == 3
        assert seen[0].reset == pytest.approx(100, abs=0.5)  # one request back at 0.01 a second
        with pytest.raises(openai.RateLimitError) as caught:
            call(llm)
        headers = caught.value.response.headers
        assert 99 < float(headers["retry-after"]) <= 100  # until one request fits
        reading = read_limit(headers, "requests")
        assert reading is not None and reading.remaining == 0 and reading.rate == pytest.approx(0.01, rel=0.01)
        assert "requests" in caught.value.message
        assert server.stats().by_status == {200: 3, 429: 1}
        server.request_bucket = BucketLimit(3, 1000.0)  # a new limit starts full
        server.rate_limit_headers = server.rate_limit_retry_after = False
        assert "x-ratelimit-limit-requests" not in call(llm).headers  # type: ignore[attr-defined]


def test_a_token_bucket_charges_the_prompt_on_arrival_and_the_completion_on_reply() -> None:
    with MockServer(token_bucket=BucketLimit(1000, 0.001), rate_limit_headers=True) as server, \
            openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0) as llm:
        first = call(llm)
        assert first.usage is not None and first.usage.prompt_tokens == 50
        reading = read_limit(first.headers, "tokens")  # type: ignore[attr-defined]
        assert reading is not None and reading.remaining == 1000 - first.usage.total_tokens
        assert read_limit(first.headers, "requests") is None  # type: ignore[attr-defined]
        with pytest.raises(openai.RateLimitError) as caught:
            for _ in range(100):  # until what is left is less than a prompt
                call(llm)
        headers = caught.value.response.headers
        assert "retry-after" not in headers
        left = read_limit(headers, "tokens")
        assert left is not None and left.remaining < 50
        assert "tokens" in caught.value.message
        assert server.stats().by_status[429] == 1
        reset = parse_duration(headers["x-ratelimit-reset-tokens"])
        assert reset is not None and reset > 900  # 1000 tokens at 1 a second… nearly all of them
