"""A token bucket: how providers limit requests and tokens per minute (a burst, then a steady rate).

The bucket holds up to `capacity`; it refills at `rate` a second; a request takes its cost out of it.
The mock server enforces one (`pipeline.testing.mockserver`), and the pacer keeps one as its model of the
endpoint's limit (`pipeline.llm.rate_gate`). The level may go below zero: a cost charged after the fact
(the completion's tokens, known only once the reply is written) is owed, and the refill pays it first.
"""

from __future__ import annotations

import math


class TokenBucket:
    """A bucket of `capacity` refilling at `rate` a second, full at `now` unless `level` says otherwise."""

    __slots__ = ("at", "capacity", "level", "rate")

    def __init__(self, capacity: float, rate: float, now: float, level: float | None = None) -> None:
        if capacity <= 0 or rate <= 0:
            raise ValueError(f"a token bucket needs a positive capacity and rate, got {capacity} and {rate}")
        self.capacity = capacity
        self.rate = rate
        self.level = capacity if level is None else level
        self.at = now

    def refill(self, now: float) -> float:
        """The level at `now` (never back in time, never above capacity)."""
        if now > self.at:
            self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
            self.at = now
        return self.level

    def wait_for(self, cost: float, now: float) -> float:
        """Seconds from `now` until `cost` fits (0: it fits now). A cost above capacity waits for a full bucket."""
        missing = min(cost, self.capacity) - self.refill(now)
        return max(0.0, missing / self.rate)

    def take(self, cost: float, now: float) -> None:
        """Charge `cost` at `now`, whether or not it fitted (the level may go below zero)."""
        self.refill(now)
        self.level -= cost

    def seconds_to_full(self, now: float) -> float:
        """Seconds from `now` until the bucket is full again: what OpenAI's `x-ratelimit-reset-*` says."""
        return max(0.0, (self.capacity - self.refill(now)) / self.rate)

    def remaining(self, now: float) -> int:
        """Whole units left at `now`, as `x-ratelimit-remaining-*` says (never negative)."""
        return max(0, math.floor(self.refill(now)))
