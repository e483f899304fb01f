"""The endpoint's recent latencies, and what they say: when a request counts as hung, and the request timeout.

A request in flight far longer than the endpoint usually takes (`HUNG_FACTOR` × its recent 95th
percentile, and at least `HUNG_FLOOR`) is taken as hung: the pacer stops counting it against the
in-flight window, so that the other chats keep moving while it waits out its timeout. When the user
sets no `--timeout`, the request timeout adapts the same way: `TIMEOUT_FACTOR` × the 95th percentile,
between `TIMEOUT_FLOOR` and `TIMEOUT_CAP`, and `TIMEOUT_START` until `MIN_SAMPLES` replies have been timed.
"""

from __future__ import annotations

import math
from collections import deque

MIN_SAMPLES = 10
"""Replies timed before the latencies say anything."""
HUNG_FACTOR = 4.0
HUNG_FLOOR = 1.0
TIMEOUT_FACTOR = 10.0
TIMEOUT_FLOOR = 30.0
TIMEOUT_START = 120.0
TIMEOUT_CAP = 600.0
_KEPT = 200
"""Latencies kept: the recent past, not the whole run (an endpoint's load changes)."""
_EVERY = 16
"""The percentile is recomputed every this many replies: sorting 200 floats per request would cost."""


class RecentLatencies:
    """The last `_KEPT` successful requests' latencies, in seconds."""

    def __init__(self, *, timeout_floor: float = TIMEOUT_FLOOR) -> None:
        self._kept: deque[float] = deque(maxlen=_KEPT)
        self._since = 0
        self._p95: float | None = None
        self._timeout_floor = timeout_floor

    def add(self, seconds: float) -> None:
        """A reply came back after `seconds`."""
        self._kept.append(seconds)
        self._since += 1
        if len(self._kept) >= MIN_SAMPLES and (self._p95 is None or self._since >= _EVERY):
            ordered = sorted(self._kept)
            self._p95 = ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]
            self._since = 0

    @property
    def p95(self) -> float | None:
        """The recent 95th percentile (None until `MIN_SAMPLES` replies)."""
        return self._p95

    def hung_after(self) -> float | None:
        """Seconds in flight after which a request counts as hung (None: too few replies to say)."""
        return None if self._p95 is None else max(HUNG_FLOOR, HUNG_FACTOR * self._p95)

    def timeout(self) -> float:
        """The request timeout when the user set none."""
        if self._p95 is None:
            return TIMEOUT_START
        return min(TIMEOUT_CAP, max(self._timeout_floor, TIMEOUT_FACTOR * self._p95))
