"""The one retry layer: which failures are retried, how long to wait, and how retries are reported.

Transient failures (429, 5xx, timeouts, dropped connections) are retried with exponential backoff
and jitter, honouring the server's Retry-After; everything else fails fast. Waits go through an
injectable `sleep`, so tests run instantly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

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
) -> T:
    """Run `call`, retrying TransientLLMError per `policy`; `outcome.attempts` counts tries even on failure."""
    backoff = wait_exponential_jitter(initial=policy.initial_wait, max=policy.max_wait, jitter=policy.jitter)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        server_says = exc.retry_after if isinstance(exc, TransientLLMError) else None
        if server_says is not None:
            return min(server_says, policy.max_wait)
        return float(backoff(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait_s = state.next_action.sleep if state.next_action else 0.0
        log.warning("retrying %s after attempt %d in %.1fs: %s", label, state.attempt_number, wait_s, exc)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(TransientLLMError),
        stop=stop_after_attempt(policy.attempts),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            outcome.attempts = attempt.retry_state.attempt_number
            return await call()
    raise AssertionError("unreachable: tenacity either returns or reraises")  # pragma: no cover
