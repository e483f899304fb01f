"""When the next request may go: a place in the in-flight window, and the endpoint's rate limits paced ahead.

A provider's rate limit answers 429 (an overloaded server 503). When each refused request only waits
out its own backoff while the others keep sending at full concurrency, the refusals go on and chats run
out of attempts: against a limit of 50 requests a second at `--concurrency 128`, 31% of 1,000 chats
ended unscored when the server sent Retry-After. So the run shares one window, as TCP does (AIMD): an
overload (503) cuts it to 70% (CUBIC's factor; halving cost 10% more time on the same run), once per
round trip (only a request sent after the last cut can cut again); every success grows it by 1/window,
up to `--concurrency`; and a Retry-After holds back every new request, not only the refused one. When
a refused request gives up is `pipeline.llm.retry`'s rule.

A rate limit (429) is a token bucket, not a window: cutting the window to 70% on 429s too left the run
at 1.33× the limit's own time. So a 429 leaves the window alone and the run paces its sends to the limit
instead (`pipeline.llm.rate_gate`, one gate for requests and one for tokens), learned from OpenAI's
`x-ratelimit-*` headers when the endpoint sends them and from the refusals when it does not; the
window still shrinks for an overloaded server (503). A request's tokens are estimated from the usage
earlier replies reported (prompt tokens per byte of request, and the mean completion).

A request in flight far longer than the endpoint's recent latencies (`pipeline.llm.latencies`) stops
counting against the window: with the window at 2 and five requests hanging until their timeout,
chats that never hung waited 120–240 s behind them. The hung request still runs to its reply or its
timeout; it just no longer holds a place.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Literal, NamedTuple

from pipeline.llm.latencies import RecentLatencies
from pipeline.llm.rate_gate import RateGate
from pipeline.llm.ratelimit_headers import LimitKind, read_limit

log = logging.getLogger("kefu.pacing")

_CUT = 0.7
"""What a refusal leaves of the window."""

Outcome = Literal["ok", "rate_limited", "slow_down", "failed"]
"""How a request ended: a completion, a 429, a 503, or anything else (which leaves the window alone)."""

_PROMPT_TOKENS_PER_BYTE = 0.25
"""The guess before any usage came back (Chinese is 3 bytes a character in UTF-8, JSON 1)."""
_LEARN = 0.1
"""How much each reply's usage moves the token estimate (an exponential moving average)."""


class TokenEstimate:
    """A request's tokens (prompt and completion) from its size, as the endpoint's usage reports them."""

    def __init__(self) -> None:
        self.per_byte = _PROMPT_TOKENS_PER_BYTE
        self.completion = 0.0
        self._seen = False

    def of(self, body_bytes: int) -> float:
        """The estimated tokens of a request of `body_bytes`."""
        return body_bytes * self.per_byte + self.completion

    def learn(self, body_bytes: int, usage: Usage) -> None:
        """Fold in what a reply's usage said."""
        per_byte = usage.prompt_tokens / body_bytes if body_bytes > 0 else self.per_byte
        if not self._seen:
            self.per_byte, self.completion, self._seen = per_byte, float(usage.completion_tokens), True
            return
        self.per_byte += _LEARN * (per_byte - self.per_byte)
        self.completion += _LEARN * (usage.completion_tokens - self.completion)


class Usage(NamedTuple):
    """A reply's token usage."""

    prompt_tokens: int
    completion_tokens: int


class Limits(NamedTuple):
    """Requests and tokens a second to start pacing at (e.g. learned by an earlier run); None: not known.
    The bursts are the endpoint's bucket sizes, when its headers said them: a run starts with them full."""

    requests: float | None = None
    tokens: float | None = None
    requests_burst: float | None = None
    tokens_burst: float | None = None


class Pacer:
    """The run's in-flight window over one endpoint; `acquire` before a request, `release` after it."""

    def __init__(self, ceiling: int, *, clock: Callable[[], float] = time.monotonic,
                 start: Limits | None = None, latencies: RecentLatencies | None = None) -> None:
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
        now, start = clock(), start or Limits()
        self.gates: dict[LimitKind, RateGate] = {
            "requests": RateGate(rate=start.requests, burst=start.requests_burst, now=now),
            "tokens": RateGate(rate=start.tokens, burst=start.tokens_burst, now=now, exact_costs=False)}
        """The endpoint's request and token limits as learned so far."""
        self.tokens = TokenEstimate()
        self.latencies = latencies or RecentLatencies()
        """Recent replies' latencies: when a request counts as hung, and the adaptive timeout."""
        self.hung = 0
        """Requests that stopped counting against the window because they took far too long."""
        self._flying: Counter[float] = Counter()  # send times of the requests counted in the window
        self._hung: Counter[float] = Counter()  # send times of those no longer counted
        self._check: asyncio.TimerHandle | None = None

    @property
    def window(self) -> int:
        """Requests that may be in flight now."""
        return max(1, int(self._window))

    @property
    def in_flight(self) -> int:
        """Requests between `acquire` and `release`."""
        return self._in_flight

    def learned(self) -> Limits:
        """The rates (a second) the endpoint's headers gave or refusals measured, to start the next run there."""
        requests, tokens = self.gates["requests"], self.gates["tokens"]
        return Limits(requests.known_rate, tokens.known_rate, requests.known_burst, tokens.known_burst)

    async def acquire(self, body_bytes: int = 0) -> float:
        """Wait for a place in the window, any Retry-After pause and the rate limits; returns the send time
        for `release`. `body_bytes`: the request's size, from which its tokens are estimated."""
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
            now = self._clock()
            costs: dict[LimitKind, float] = {"requests": 1.0, "tokens": self.tokens.of(body_bytes)}
            wait = max(gate.reserve(costs[kind], now) for kind, gate in self.gates.items())
            if wait > 0:
                await asyncio.sleep(wait)
        except asyncio.CancelledError:
            self._free()
            raise
        now = self._clock()
        for gate in self.gates.values():
            gate.sent(now)
        self._flying[now] += 1
        if self._check is None:
            self._schedule_check(now)
        return now

    def release(self, sent_at: float, outcome: Outcome, retry_after: float | None = None, *,
                headers: Mapping[str, str] | None = None, body_bytes: int = 0, usage: Usage | None = None) -> None:
        """End a request that `acquire` let through at `sent_at`, and adjust the window and the rate limits to
        how it ended: `headers` are the reply's, `usage` its token usage."""
        now = self._clock()
        described = False
        if headers is not None:
            for kind, gate in self.gates.items():
                if (reading := read_limit(headers, kind)) is not None:
                    gate.observe(reading, now)
                    described = True
        if usage is not None:
            self.tokens.learn(body_bytes, usage)
        unanswered_after = self.latencies.hung_after()
        learns = outcome == "rate_limited" and not described  # a 429 that says nothing else: the bucket was empty
        for kind, gate in self.gates.items():
            if learns and kind == "requests":
                gate.refused(sent_at, now, unanswered_after=unanswered_after)
            else:
                gate.answered(sent_at, now, unanswered_after=unanswered_after)
        if outcome == "rate_limited":
            self.refusals += 1
            if retry_after:
                self._paused_until = max(self._paused_until, now + retry_after)
        elif outcome == "slow_down":
            self._slow_down(sent_at, retry_after)
        elif outcome == "ok":
            self.latencies.add(now - sent_at)
            if self._window < self.ceiling:
                self._window = min(float(self.ceiling), self._window + 1.0 / self._window)
        if self._hung[sent_at]:
            self._hung[sent_at] -= 1  # its place was given back when it was taken as hung
            if not self._hung[sent_at]:
                del self._hung[sent_at]
            return
        self._flying[sent_at] -= 1
        if not self._flying[sent_at]:
            del self._flying[sent_at]
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

    def _schedule_check(self, now: float) -> None:
        """Look for hung requests when the oldest one in flight would become one."""
        hung_after = self.latencies.hung_after()
        if hung_after is None or not self._flying:
            self._check = None
            return
        due = min(self._flying) + hung_after - now
        self._check = asyncio.get_running_loop().call_later(max(due, 0.0), self._uncount_hung)

    def _uncount_hung(self) -> None:
        """Give back the places of the requests in flight for longer than the endpoint's latencies warrant."""
        now = self._clock()
        hung_after = self.latencies.hung_after()
        if hung_after is not None:
            for sent_at in [at for at in self._flying if now - at >= hung_after]:
                count = self._flying.pop(sent_at)
                self._hung[sent_at] += count
                self.hung += count
                log.info("%d request(s) in flight for %.0f s (recent replies took at most %.1f s): "
                         "no longer holding a place", count, now - sent_at, self.latencies.p95 or 0.0)
                for _ in range(count):
                    self._free()
        self._schedule_check(now)

    def _free(self) -> None:
        self._in_flight -= 1
        while self._waiters and self._in_flight < self.window:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)
