"""The pacer's model of one of the endpoint's limits (requests or tokens a minute) as a token bucket.

Providers limit with token buckets: a burst, then a steady rate. Pacing ahead of the bucket sends each
request when the model says it fits, so the limit sets the pace without refusals.

- With OpenAI's `x-ratelimit-*` headers, each reply says the bucket's capacity, what is left and when
  it is full again; the rate is (capacity − left) / reset. The model's level never stays above what the
  endpoint says is left (it may be below: requests sent since the reply was written are charged already).
- Without them, only refusals say anything: a 429 means the bucket was empty when it was answered,
  so between two refusals the endpoint accepted exactly its refill, provided every request in between
  had to wait its turn (else the bucket may have filled up and spilt over). That count is taken once
  every request sent in between has its answer (a refusal answered late would otherwise count as
  accepted: a stalled event loop answers a pile of them in any order, and a count that came out 2–3×
  too high kept a run sending into refusals). The gate then paces at the measured rate, and creeps up
  (`_PROBE` a second) so that a limit raised mid-run is found again; the next measurement sets it anew,
  lowering the pace by at most 10% a second (a token limit that owes a burst's completions
  refuses everything for a while, and a count over that time comes out low).
  Until a first measurement, the rate is a guess (what got through before the refusals, over at least
  a second), which each later refusal can only lower; it climbs fast (`_PROBE_GUESS`) only while
  nothing is refused, to find a limit it guessed too low.
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
"""How fast a guessed rate grows while nothing is refused: 30% a second."""
_SPAN = 1.0
"""Refusals at least this many seconds apart measure the rate (closer ones are the same empty bucket)."""
_HORIZON = 3.0
"""Refusals further apart than this do not measure the rate: in between the bucket may have filled and spilt over."""
_MOST_CUT = 0.9
"""The lowest fraction of the pace one measurement may leave."""
_LEARNED_BURST = 0.05
"""A rate learned from refusals gets a bucket of this many seconds' refill: no more burst than that is known."""
_UNANSWERED = 60.0
"""A request unanswered this long (without a better bound from the endpoint's latencies) counts as accepted."""


class RateGate:
    """One limit, as the pacer knows it: nothing (sends freely), a rate learned from refusals, or from headers."""

    def __init__(self, *, rate: float | None = None, burst: float | None = None, now: float = 0.0,
                 exact_costs: bool = True) -> None:
        self.exact_costs = exact_costs
        """Whether what `reserve` charges is what the endpoint counts (one a request), not an estimate (tokens)."""
        self.bucket: TokenBucket | None = None
        """The model; None until the limit makes itself known (or `rate` starts it, e.g. a learned rate)."""
        self.from_headers = False
        """Whether the endpoint's headers describe this limit (else it is learned from refusals)."""
        self._sent: deque[float] = deque()  # send times a measurement may still need (`_forget`)
        self._refused: list[float] = []  # send times of the refused requests, as long, sorted
        self._through: deque[float] = deque()  # times the gate let a request straight through, as long
        self._open: list[float] = []  # send times of the requests not answered yet, sorted
        self._pending: deque[tuple[float, float]] = deque()  # refusals to measure between, once all answered
        self._refused_at = -math.inf  # when the latest refusal came
        self._cut_at = -math.inf  # when a measurement last lowered the pace
        self._low, self._high = 0.0, math.inf  # what the headers so far say of the rate
        self._measured = rate is not None  # whether the rate was measured (or given), not guessed
        if rate is not None:  # a known burst starts full (a new run meets a rested bucket); else empty
            self.bucket = TokenBucket(burst or max(1.0, rate * _LEARNED_BURST), rate, now, level=burst or 0.0)

    @property
    def rate(self) -> float | None:
        """The rate paced at, a second (None: not known)."""
        return self.bucket.rate if self.bucket is not None else None

    @property
    def known_rate(self) -> float | None:
        """The rate when the headers gave it or refusals measured it (not while it is a guess)."""
        return self.rate if self.from_headers or self._measured else None

    @property
    def known_burst(self) -> float | None:
        """The endpoint's bucket size, when its headers gave it."""
        return self.bucket.capacity if self.from_headers and self.bucket is not None else None

    def reserve(self, cost: float, now: float) -> float:
        """Charge a request's `cost` and return the seconds it must wait before it is sent (then call `sent`)."""
        bucket = self.bucket
        if bucket is None:
            self._through.append(now)
            return 0.0
        if not self.from_headers and now > bucket.at:
            probe = _PROBE if self._measured else _PROBE_GUESS if now - self._refused_at > _SPAN else 0.0
            bucket.rate *= 1.0 + probe * (now - bucket.at)
        wait = bucket.wait_for(cost, now)
        bucket.take(cost, now)
        if wait == 0:
            self._through.append(now)
        return wait

    def sent(self, now: float) -> None:
        """A request went out at `now` (then call `refused` or `answered` with `now` when its answer comes)."""
        self._sent.append(now)
        bisect.insort(self._open, now)
        self._forget(now)

    def answered(self, sent_at: float, now: float, *, unanswered_after: float | None = None) -> None:
        """The request sent at `sent_at` got an answer other than a refusal this gate learns from.
        `unanswered_after`: seconds after which a request still unanswered counts as accepted (hung)."""
        self._close(sent_at)
        self._measure(now, unanswered_after)

    def observe(self, reading: LimitReading, now: float) -> None:
        """What a reply's headers said about this limit."""
        rate = self._rate_from(reading)
        bucket = self.bucket
        if bucket is None or not self.from_headers:
            if rate is None:
                return  # a full bucket: its rate is not known yet, and nothing needs pacing
            # Requests already given their turn by a learned or guessed rate are not in `remaining` yet. Estimated
            # costs are left out: charged before any usage came back, they overstated a first wave's tokens.
            owed = min(0.0, bucket.refill(now)) if bucket is not None and self.exact_costs else 0.0
            self.bucket = TokenBucket(reading.limit, rate, now, level=reading.remaining + owed)
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

    def refused(self, sent_at: float, now: float, *, unanswered_after: float | None = None) -> None:
        """A 429 for a request sent at `sent_at`, with no headers describing the limit: the bucket was empty."""
        self._close(sent_at)
        bucket = self.bucket
        if self.from_headers and bucket is not None:
            bucket.refill(now)
            bucket.level = min(bucket.level, 0.0)
            return
        bisect.insort(self._refused, sent_at)
        self._refused_at = now
        earlier = bisect.bisect_right(self._refused, sent_at - _SPAN)
        if earlier > 0 and (since := self._refused[earlier - 1]) >= sent_at - _HORIZON \
                and not self._went_through(since, sent_at):  # empty at both, and never spilt over in between
            self._pending.append((since, sent_at))
        if bucket is None:
            bucket = self.bucket = TokenBucket(1.0, self._guess(sent_at), now, level=0.0)
        elif not self._measured:  # more refusals known: what got through is less than the guess took
            bucket.rate = min(bucket.rate, self._guess(sent_at))
        bucket.refill(now)
        bucket.capacity = max(1.0, bucket.rate * _LEARNED_BURST)
        bucket.level = min(bucket.level, 0.0)  # requests already waiting their turn keep it
        self._measure(now, unanswered_after)

    def _guess(self, sent_at: float) -> float:
        """What got through lately (the sends kept, less the refusals known), over at least a second."""
        start = self._sent[0] if self._sent else sent_at
        accepted = self._count_sent(-math.inf, sent_at) - self._count_refused(-math.inf, sent_at)
        return max(1, accepted) / max(_SPAN, sent_at - start)

    def _measure(self, now: float, unanswered_after: float | None) -> None:
        """Take the counts between two refusals whose requests in between all have their answer."""
        pending = self._pending
        stale = now - (unanswered_after or _UNANSWERED)  # sent before: hung, not refused
        while pending:
            since, until = pending[0]
            first_open = bisect.bisect_right(self._open, max(since, stale))
            if first_open < len(self._open) and self._open[first_open] <= until:
                return  # a refusal among them may not have arrived yet
            pending.popleft()
            accepted = self._count_sent(since, until) - self._count_refused(since, until)
            rate = max(1, accepted) / (until - since)
            bucket = self.bucket
            assert bucket is not None  # a refusal made it
            if rate < bucket.rate:
                # A count can come out low (a token limit owed the completions of a burst, charged late, and
                # refused everything for a while): at most one 10% cut a second.
                recent = now - self._cut_at < _SPAN
                rate = bucket.rate if recent else max(rate, _MOST_CUT * bucket.rate)
                if not recent:
                    self._cut_at = now
            bucket.refill(now)
            bucket.rate, bucket.capacity = rate, max(1.0, rate * _LEARNED_BURST)
            bucket.level = min(bucket.level, bucket.capacity)
            self._measured = True

    def _close(self, sent_at: float) -> None:
        """The request sent at `sent_at` has its answer."""
        at = bisect.bisect_left(self._open, sent_at)
        if at < len(self._open) and self._open[at] == sent_at:
            del self._open[at]

    def _went_through(self, after: float, until: float) -> bool:
        """Whether the gate let a request straight through in (after, until]: then the endpoint's bucket may
        have filled up and spilt over in between."""
        through = self._through
        return bisect.bisect_right(through, until) > bisect.bisect_right(through, after)

    def _forget(self, now: float) -> None:
        """Drop what no measurement can need. A refusal may still come for any request unanswered, and measure
        back to a refusal up to the horizon before it; a measurement waiting for answers needs its own span."""
        keep = (self._open[0] if self._open else now) - _HORIZON - _SPAN
        if self._pending:
            keep = min(keep, self._pending[0][0])
        for times in (self._sent, self._through):
            while times and times[0] < keep:
                times.popleft()
        del self._refused[:bisect.bisect_left(self._refused, keep)]

    def _count_sent(self, after: float, until: float) -> int:
        """Requests sent in (after, until]."""
        sent = self._sent
        return bisect.bisect_right(sent, until) - bisect.bisect_right(sent, after)

    def _count_refused(self, after: float, until: float) -> int:
        refused = self._refused
        return bisect.bisect_right(refused, until) - bisect.bisect_right(refused, after)
