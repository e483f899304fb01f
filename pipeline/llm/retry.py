"""The one retry layer: which failures are retried, how long to wait, and how retries are reported.

Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff
and jitter, honouring the server's Retry-After; everything else fails fast. Waits go through an
injectable `sleep`, so tests run instantly.

A 429 or 503 while other requests got through (`served_since`) is a rate limit at work, not a failing
endpoint: it does not use up the call's `attempts`, so a backlog sent faster than the limit is slowed
down (pipeline.llm.pacing) rather than left unscored. `slow_down_attempts` still bounds such retries, for
a request that a limit never lets through while it lets others through. When a pacer sends the
retry (`paced`), a 429 waits for the pacer alone: it paces every request to the limit and holds them
all for a Retry-After, while a backoff of a second or two only leaves the last chats of a run waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from pipeline.errors import TransientLLMError

T = TypeVar("T")
log = logging.getLogger("kefu.retry")

Sleep = Callable[[float], Awaitable[None]]


class RetryPolicy(BaseModel):
    """How hard to try before a grade is stored as unscored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempts: int = Field(default=6, ge=1, description="Total attempts per call, the first included.")
    initial_wait: float = Field(default=1.0, ge=0, description="First backoff in seconds.")
    max_wait: float = Field(default=60.0, ge=0, description="Cap on one backoff, Retry-After included.")
    jitter: float = Field(default=1.0, ge=0, description="Up to this many seconds of random jitter.")
    slow_down_attempts: int = Field(
        default=20, ge=0,
        description="Further attempts a call may make on 429/503 answers while other requests succeed.",
    )


class RetryOutcome(BaseModel):
    """How many attempts a call took, whatever its result."""

    attempts: int = 0


async def call_with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    outcome: RetryOutcome,
    *,
    sleep: Sleep = asyncio.sleep,
    label: str = "",
    served_since: Callable[[float], bool] | None = None,
    paced: bool = False,
) -> T:
    """Run `call`, retrying TransientLLMError per `policy`; `outcome.attempts` counts tries even on failure.

    `served_since(t)`: whether any request of the endpoint succeeded after time.monotonic() `t`.
    `paced`: whether `call` waits for a pacer (pipeline.pacing) before it sends.
    """
    previous_sent = sent = 0.0  # when the previous attempt and the latest one were sent
    counted = 0  # failed attempts that count against `policy.attempts`
    judged = 0  # the attempt `counted` has seen (tenacity asks `wait`, then `stop`, about each failure)

    def judge(state: RetryCallState) -> None:
        nonlocal counted, judged
        if judged == state.attempt_number:
            return
        judged = state.attempt_number
        exc = state.outcome.exception() if state.outcome else None
        if not (isinstance(exc, TransientLLMError) and exc.slow_down
                and served_since is not None and served_since(previous_sent)):
            counted += 1  # free only when another request got through since the previous try was sent

    def stop(state: RetryCallState) -> bool:
        judge(state)
        return counted >= policy.attempts or state.attempt_number >= policy.attempts + policy.slow_down_attempts

    def wait(state: RetryCallState) -> float:
        judge(state)
        exc = state.outcome.exception() if state.outcome else None
        if paced and isinstance(exc, TransientLLMError) and exc.status == 429:
            return 0.0
        server_says = exc.retry_after if isinstance(exc, TransientLLMError) else None
        if server_says is not None:
            return min(server_says, policy.max_wait)
        # Exponential with jitter, as tenacity's wait_exponential_jitter, over the counted failures only:
        # waiting out a rate limit does not grow the wait.
        grown = policy.initial_wait * 2.0 ** (min(max(counted, 1), 64) - 1)
        return min(policy.max_wait, grown + random.uniform(0, policy.jitter))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        log.warning("retrying %s after attempt %d in %.1fs: %s", label, state.attempt_number, wait_s, exc)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientLLMError),
        stop=stop,
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            outcome.attempts = attempt.retry_state.attempt_number
            now = time.monotonic()
            previous_sent, sent = (sent if outcome.attempts > 1 else now), now
            return await call()
    raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover
