"""The pacer's model of one of the endpoint's limits (requests or tokens a minute) as a token bucket.

Providers limit with token buckets: a burst, then a steady rate. Pacing ahead of the bucket sends each
request when the model says it fits, so the limit sets the pace without refusals.

- With OpenAI's `x-ratelimit-*` headers, each reply says the bucket's capacity, what is left and when
  it is full again; the rate is (capacity − left) / reset. The model's level never stays above what the
  endpoint says is left (it may be below: requests sent since the reply was written are charged already).
- Without them, only refusals say anything: a 429 means the bucket was empty when it was answered,
  so between two refusals the endpoint accepted exactly its refill, provided every request in between
  had to wait its turn (else the bucket may have filled up and spilt over). The gate paces at that measured
  rate, and creeps up (`_PROBE` a second) so that a limit raised mid-run is found again; the next
  refusal measures it anew. Until a first measurement, the rate is a guess (what got through before
  the first refusal, over a second) and climbs fast (`_PROBE_GUESS`) until the limit refuses again.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from pipeline.llm.ratelimit_headers import LimitReading
from pipeline.llm.token_bucket import TokenBucket

_PROBE = 0.01
"""How fast a rate measured from refusals alone grows while nothing is refused: 1% a second."""
_PROBE_GUESS = 0.3
"""How fast a guessed rate grows: 30% a second."""
_SPAN = 1.0
"""Refusals at least this many seconds apart measure the rate (closer ones are the same empty bucket)."""
_HORIZON = 3.0
"""Refusals older than this do not measure the rate: in between the bucket may have filled and spilt over."""
_MOST_CUT = 0.9
"""The lowest fraction of the pace one measurement may leave."""
_LEARNED_BURST = 0.05
"""A rate learned from refusals gets a bucket of this many seconds' refill: no more burst than that is known."""


class RateGate:
    """One limit, as the pacer knows it: nothing (sends freely), a rate learned from refusals, or from headers."""

    def __init__(self, *, rate: float | None = None, burst: float | None = None, now: float = 0.0) -> None:
        self.bucket: TokenBucket | None = None
        """The model; None until the limit makes itself known (or `rate` starts it, e.g. a learned rate)."""
        self.from_headers = False
        """Whether the endpoint's headers describe this limit (else it is learned from refusals)."""
        self._sent: deque[float] = deque()  # send times within the horizon
        self._refused: list[float] = []  # send times of the refused requests within the horizon, sorted
        self._cut_at = -math.inf  # when a measurement last lowered the pace
        self._low, self._high = 0.0, math.inf  # what the headers so far say of the rate
        self._slack = -math.inf  # the latest time the gate let a request straight through: not saturated
        self._measured = rate is not None  # whether the rate was measured (or given), not guessed
        if rate is not None:
            self.bucket = TokenBucket(burst or max(1.0, rate * _LEARNED_BURST), rate, now, level=0.0)

    @property
    def rate(self) -> float | None:
        """The rate paced at, a second (None: not known)."""
        return self.bucket.rate if self.bucket is not None else None

    @property
    def known_rate(self) -> float | None:
        """The rate when the headers gave it or refusals measured it (not while it is a guess)."""
        return self.rate if self.from_headers or self._measured else None

    def reserve(self, cost: float, now: float) -> float:
        """Charge a request's `cost` and return the seconds it must wait before it is sent (then call `sent`)."""
        bucket = self.bucket
        if bucket is None:
            self._slack = now
            return 0.0
        if not self.from_headers and now > bucket.at:
            bucket.rate *= 1.0 + (_PROBE if self._measured else _PROBE_GUESS) * (now - bucket.at)
        wait = bucket.wait_for(cost, now)
        bucket.take(cost, now)
        if wait == 0:
            self._slack = now
        return wait

    def sent(self, now: float) -> None:
        """A request went out at `now`: what the endpoint accepted between two refusals is counted from these."""
        sent = self._sent
        sent.append(now)
        while sent[0] < now - _HORIZON:  # kept only as long as a refusal can look back
            sent.popleft()

    def observe(self, reading: LimitReading, now: float) -> None:
        """What a reply's headers said about this limit."""
        rate = self._rate_from(reading)
        bucket = self.bucket
        if bucket is None or not self.from_headers:
            if rate is None:
                return  # a full bucket: its rate is not known yet, and nothing needs pacing
            self.bucket = TokenBucket(reading.limit, rate, now, level=reading.remaining)
            self.from_headers = True
            return
        bucket.refill(now)
        bucket.capacity = reading.limit
        if rate is not None:
            bucket.rate = rate
        bucket.level = min(bucket.level, reading.remaining)

    def _rate_from(self, reading: LimitReading) -> float | None:
        """The rate the readings so far pin down. `remaining` is rounded down, so one reading only bounds it:
        (taken − 1) / reset ≤ rate ≤ taken / reset (no upper bound when nothing is left: the bucket may owe);
        the bounds of successive readings are intersected, and start afresh when they disagree (a new limit)."""
        if reading.reset <= 0 or reading.remaining >= reading.limit:
            return None
        taken = reading.limit - reading.remaining
        low = max(0.0, taken - 1) / reading.reset
        high = taken / reading.reset if reading.remaining > 0 else math.inf
        if max(low, self._low) > min(high, self._high):
            self._low, self._high = low, high
        else:
            self._low, self._high = max(low, self._low), min(high, self._high)
        if math.isinf(self._high):
            return max(self._low, reading.limit / reading.reset)
        return (self._low + self._high) / 2 if self._low > 0 else self._high

    def refused(self, sent_at: float, now: float) -> None:
        """A 429 for a request sent at `sent_at`, with no headers describing the limit: the bucket was empty."""
        bucket = self.bucket
        if self.from_headers and bucket is not None:
            bucket.refill(now)
            bucket.level = min(bucket.level, 0.0)
            return
        horizon = now - _HORIZON
        del self._refused[:bisect.bisect_left(self._refused, horizon)]
        earlier_at = bisect.bisect_right(self._refused, sent_at - _SPAN)
        bisect.insort(self._refused, sent_at)
        # Only while every request waited its turn did the endpoint's bucket stay empty (never spill over).
        if earlier_at > 0 and self._refused[earlier_at - 1] > self._slack:
            # Empty at both refusals: what got through in between is the refill, exactly.
            since = self._refused[earlier_at - 1]
            rate = max(1, self._count_sent(since, sent_at) - self._count_refused(since, sent_at)) / (sent_at - since)
            if bucket is not None and rate < bucket.rate:
                # A count can come out low (a bucket that spilt over while the pace was below the limit, the
                # completions of a burst charged late): at most one 10% cut a second.
                recent = now - self._cut_at < _SPAN
                rate = bucket.rate if recent else max(rate, _MOST_CUT * bucket.rate)
                if not recent:
                    self._cut_at = now
            self._measured = True
        elif bucket is None:
            # The first refusals: what got through lately (the sends kept), over at least a second, is all
            # there is to go on.
            start = self._sent[0] if self._sent else sent_at
            accepted = self._count_sent(-math.inf, sent_at) - self._count_refused(-math.inf, sent_at)
            rate = max(1, accepted) / max(_SPAN, sent_at - start)
        else:
            rate = bucket.rate  # refused again within the span: the same empty bucket
        if bucket is None:
            self.bucket = TokenBucket(max(1.0, rate * _LEARNED_BURST), rate, now, level=0.0)
            self._slack = now
            return
        bucket.refill(now)
        bucket.rate, bucket.capacity = rate, max(1.0, rate * _LEARNED_BURST)
        bucket.level = min(bucket.level, 0.0)  # requests already waiting their turn keep it

    def _count_sent(self, after: float, until: float) -> int:
        """Requests sent in (after, until]."""
        sent = self._sent
        return bisect.bisect_right(sent, until) - bisect.bisect_right(sent, after)

    def _count_refused(self, after: float, until: float) -> int:
        refused = self._refused
        return bisect.bisect_right(refused, until) - bisect.bisect_right(refused, after)
