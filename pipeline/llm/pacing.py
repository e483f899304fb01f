"""How many requests may be in flight right now: `--concurrency`, lowered while the endpoint says to slow down.

A provider's rate limit answers 429 (an overloaded server 503). When each refused request only waits
out its own backoff while the others keep sending at full concurrency, the refusals go on and chats run
out of attempts: against a limit of 50 requests a second at `--concurrency 128`, 31% of 1,000 chats
ended unscored when the server sent Retry-After. So the run shares one window, as TCP does (AIMD): a
refusal cuts it to 70% (CUBIC's factor; halving cost 10% more time on the same run), once per round
trip (only a request sent after the last cut can cut again); every success grows it by 1/window, up to
`--concurrency`; and a Retry-After holds back every new request, not only the refused one. When a
refused request gives up is `pipeline.llm.retry`'s rule.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Literal

log = logging.getLogger("kefu.pacing")

_CUT = 0.7
"""What a refusal leaves of the window."""

Outcome = Literal["ok", "slow_down", "failed"]
"""How a request ended: a completion, a 429/503 (`TransientLLMError.slow_down`), or anything else
(which leaves the window alone)."""


class Pacer:
    """The run's in-flight window over one endpoint; `acquire` before a request, `release` after it."""

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ceiling < 1:
            raise ValueError(f"the in-flight ceiling must be at least 1, got {ceiling}")
        self.ceiling = ceiling
        self.refusals = 0
        """429/503 answers so far."""
        self.lowest = ceiling
        """The smallest window the run went down to."""
        self._window = float(ceiling)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._paused_until = -math.inf
        self._last_cut = -math.inf
        self._clock = clock

    @property
    def window(self) -> int:
        """Requests that may be in flight now."""
        return max(1, int(self._window))

    @property
    def in_flight(self) -> int:
        """Requests between `acquire` and `release`."""
        return self._in_flight

    async def acquire(self) -> float:
        """Wait for a place in the window and for any Retry-After pause; returns the send time for `release`."""
        if self._in_flight < self.window and not self._waiters:
            self._in_flight += 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # `_free` counts this request in before waking it
            except asyncio.CancelledError:
                if not waiter.cancelled():
                    self._free()  # a place was handed on to this request: pass it on
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        try:
            while (pause := self._paused_until - self._clock()) > 0:
                await asyncio.sleep(pause)
        except asyncio.CancelledError:
            self._free()
            raise
        return self._clock()

    def release(self, sent_at: float, outcome: Outcome, retry_after: float | None = None) -> None:
        """End a request that `acquire` let through at `sent_at`, and adjust the window to how it ended."""
        if outcome == "slow_down":
            self._slow_down(sent_at, retry_after)
        elif outcome == "ok" and self._window < self.ceiling:
            self._window = min(float(self.ceiling), self._window + 1.0 / self._window)
        self._free()

    def _slow_down(self, sent_at: float, retry_after: float | None) -> None:
        now = self._clock()
        self.refusals += 1
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if sent_at < self._last_cut:
            return  # sent under the window before the last cut: that cut already answered it
        before = self.window
        self._window = max(1.0, self._window * _CUT)
        self._last_cut = now
        self.lowest = min(self.lowest, self.window)
        log.info("the endpoint asked to slow down: at most %d requests in flight (was %d)", self.window, before)

    def _free(self) -> None:
        self._in_flight -= 1
        while self._waiters and self._in_flight < self.window:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)
