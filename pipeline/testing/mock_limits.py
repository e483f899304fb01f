"""The mock server's provider-style rate limits: token buckets for requests and tokens, and their headers.

As OpenAI's limits work: a call is refused (429) when the requests bucket has no whole request left or
the tokens bucket has less than the call's prompt tokens; an accepted call takes one request and its
prompt tokens at once, and its completion tokens when the reply is written (so the tokens a reply's
`usage` reports are exactly what the bucket was charged). Every reply can carry the
`x-ratelimit-*` headers (`pipeline.llm.ratelimit_headers`).
"""

from __future__ import annotations

import threading
from typing import NamedTuple

from pipeline.llm.ratelimit_headers import LimitKind, limit_headers
from pipeline.llm.token_bucket import TokenBucket


class BucketLimit(NamedTuple):
    """A token bucket's shape: `burst` at most at once, refilled at `per_second`."""

    burst: float
    per_second: float


class Refusal(NamedTuple):
    """Why a call was refused: which limit, and seconds until the call would fit."""

    kind: LimitKind
    wait: float


class BucketLimits:
    """The requests and tokens buckets of one mock endpoint (either may be absent)."""

    def __init__(self, requests: BucketLimit | None, tokens: BucketLimit | None, now: float) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[LimitKind, TokenBucket] = {}
        if requests is not None:
            self._buckets["requests"] = TokenBucket(requests.burst, requests.per_second, now)
        if tokens is not None:
            self._buckets["tokens"] = TokenBucket(tokens.burst, tokens.per_second, now)

    def admit(self, prompt_tokens: int, now: float) -> Refusal | None:
        """Take one request and its prompt tokens, or say which limit refuses it (taking nothing)."""
        costs: dict[LimitKind, float] = {"requests": 1.0, "tokens": float(prompt_tokens)}
        with self._lock:
            for kind, bucket in self._buckets.items():
                wait = bucket.wait_for(costs[kind], now)
                if wait > 0:
                    return Refusal(kind, wait)
            for kind, bucket in self._buckets.items():
                bucket.take(costs[kind], now)
        return None

    def charge_completion(self, tokens: int, now: float) -> None:
        """The reply's completion tokens, owed once it is written."""
        bucket = self._buckets.get("tokens")
        if bucket is not None:
            with self._lock:
                bucket.take(float(tokens), now)

    def headers(self, now: float) -> dict[str, str]:
        """OpenAI's `x-ratelimit-*` headers for the buckets as they are at `now`."""
        headers: dict[str, str] = {}
        with self._lock:
            for kind, bucket in self._buckets.items():
                headers.update(limit_headers(kind, bucket.capacity, bucket.remaining(now), bucket.seconds_to_full(now)))
        return headers
