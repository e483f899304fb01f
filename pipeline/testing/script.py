"""What a test scripts the mock server to answer: replies, contents, faults, drops and delays, and latencies."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any, Literal, TypeAlias

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pipeline.llm.ratelimit_headers import LimitKind

Latency: TypeAlias = float | Callable[[random.Random], float]
"""Seconds to wait before answering: a constant, or a function drawing from the server's seeded generator."""


def openai_error(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """An error body shaped like OpenAI's, which the SDK reads into `APIStatusError.message`/`.code`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class Reply(BaseModel):
    """A whole response body sent as JSON with status 200, for shapes the generator does not make."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    body: dict[str, Any] = Field(description="The JSON body, sent exactly as given.")


class Content(BaseModel):
    """A normal chat.completion whose message content is exactly this text, e.g. malformed JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(description="The assistant message content.")


class Fault(BaseModel):
    """An HTTP error answer; the class methods build the common ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: int = Field(ge=400, le=599, description="HTTP status code.")
    body: dict[str, Any] | str = Field(description="JSON body (a dict) or raw text.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra response headers.")

    @classmethod
    def rate_limited(cls, retry_after: float | None = 0, kind: LimitKind = "requests") -> Fault:
        """429 with `Retry-After` (omitted when None), as OpenAI sends when a quota is hit."""
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        body = openai_error(f"Rate limit reached for {kind}", kind, code="rate_limit_exceeded")
        return cls(status=429, body=body, headers=headers)

    @classmethod
    def unauthorized(cls) -> Fault:
        """401 for a wrong or missing API key."""
        body = openai_error("Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        return cls(status=401, body=body)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx the client should retry."""
        body = openai_error("The server had an error while processing your request.", "server_error")
        return cls(status=status, body=body)

    @classmethod
    def bad_request(cls, message: str, param: str | None = None) -> Fault:
        """400 invalid_request_error, the answer to a request the server will never accept."""
        return cls(status=400, body=openai_error(message, "invalid_request_error", param=param))


class Drop(BaseModel):
    """Close the connection without sending any response."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Delay(BaseModel):
    """Wait, then answer: long enough and it trips the client's timeout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seconds: float = Field(ge=0, description="How long to sleep before answering.")
    then: Reply | Content | Fault | Drop | None = Field(
        default=None, description="What to answer after the wait; None means the normal generated reply."
    )


Scripted = Reply | Content | Fault | Delay | Drop

ApiCall = Literal["files.create", "files.content", "batches.create", "batches.retrieve"]
"""The files and batches calls `MockServer.script_api` can make fail."""


def lognormal_latency(mean: float, sigma: float = 0.5) -> Callable[[random.Random], float]:
    """Latency with a long right tail, like a busy model server; `mean` is the mean in seconds."""
    if mean <= 0:
        raise ValueError(f"mean latency must be positive, got {mean}")
    mu = math.log(mean) - sigma * sigma / 2  # E[lognormal(mu, sigma)] = exp(mu + sigma²/2)

    def draw(rng: random.Random) -> float:
        return rng.lognormvariate(mu, sigma)

    return draw


# --- values from a JSON schema -------------------------------------------------------------------


def fault_response(fault: Fault) -> web.Response:
    """A Fault as the HTTP response that carries it."""
    if isinstance(fault.body, str):
        return web.Response(status=fault.status, text=fault.body, headers=fault.headers)
    return web.json_response(fault.body, status=fault.status, headers=fault.headers)
