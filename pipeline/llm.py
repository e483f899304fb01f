"""The model endpoint: the only module that talks to the `openai` SDK, and maps its errors to ours.

One shared AsyncOpenAI client per run, SDK retries off (our one retry layer is `retry`). The call
goes through `with_raw_response` and the reply JSON is read once, skipping the SDK's own model
building, which costs more client CPU than the rest of a grade (see bench/README.md).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import openai

from pipeline.errors import FatalLLMError, LLMError, SchemaUnsupportedError, TransientLLMError

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")
_SCHEMA_WORDS = re.compile(r"json_schema|response_format|structured output|guided", re.IGNORECASE)


@dataclass(frozen=True)
class ChatResult:
    """The parts of a chat completion that kefu-qa keeps."""

    content: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call: base URL, key, timeout. The key never leaves this object."""

    base_url: str | None
    api_key: str | None
    timeout: float = 120.0


class LLMClient:
    """An OpenAI-compatible chat endpoint, shared by every grade of a run."""

    def __init__(self, endpoint: Endpoint) -> None:
        self._api_key = endpoint.api_key or "not-needed"
        self._client = openai.AsyncOpenAI(
            base_url=endpoint.base_url,
            api_key=self._api_key,
            timeout=endpoint.timeout,
            max_retries=0,  # our one retry layer is pipeline.retry
        )  # the SDK's default pool (1,000 connections) already allows hundreds in flight

    @property
    def base_url(self) -> str:
        """The endpoint's base URL, for messages and the loopback check."""
        return str(self._client.base_url)

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        model: str,
        response_format: dict[str, Any],
        temperature: float | None,
        seed: int | None,
        max_tokens: int | None,
    ) -> ChatResult:
        """One chat completion; raises TransientLLMError, FatalLLMError or SchemaUnsupportedError."""
        extra: dict[str, Any] = {}
        if temperature is not None:
            extra["temperature"] = temperature
        if seed is not None:
            extra["seed"] = seed
        if max_tokens is not None:
            extra["max_tokens"] = max_tokens
        try:
            # call-overload: plain dicts are what the HTTP API takes; the SDK's TypedDicts add nothing here.
            raw = await self._client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
                model=model, messages=messages, response_format=response_format, **extra
            )
        except openai.APIStatusError as exc:
            raise self._status_error(exc, response_format) from None
        except openai.APITimeoutError:
            raise TransientLLMError("the endpoint did not answer in time") from None
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"connection to the endpoint failed: {self._scrub(str(exc))}") from None
        return _parse_completion(raw.content)

    def _scrub(self, text: str) -> str:
        """Never let the key (or anything key-shaped) into a message, log or stored grade."""
        if self._api_key and len(self._api_key) > 3:
            text = text.replace(self._api_key, "***")
        return _KEY_LIKE.sub(r"\1***", text)

    def _status_error(self, exc: openai.APIStatusError, response_format: dict[str, Any]) -> LLMError:
        status = exc.status_code
        message = self._scrub(_error_message(exc))
        if status == 429 or status >= 500 or status in (408, 409):
            return TransientLLMError(f"HTTP {status}: {message}", status=status, retry_after=_retry_after(exc))
        if status == 400 and response_format.get("type") == "json_schema" and _SCHEMA_WORDS.search(message):
            return SchemaUnsupportedError(
                f"HTTP 400: {message}",
                status=status,
                hint="the endpoint does not take response_format json_schema; use --response-format json_object",
            )
        hints = {
            400: "the endpoint rejected the request; check --model, --max-tokens and the context length",
            401: "the API key was refused: set OPENAI_API_KEY (or --api-key) to a valid key for this endpoint",
            403: "the API key may not use this model or endpoint: check the key's permissions and --model",
            404: "not found: check --base-url (usually ending in /v1) and that --model exists on the endpoint",
            422: "the endpoint could not process the request; check --model and the sampling options",
        }
        return FatalLLMError(f"HTTP {status}: {message}", status=status, hint=hints.get(status, "see the message"))


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return exc.message


def _retry_after(exc: openai.APIStatusError) -> float | None:
    headers = exc.response.headers
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value:
            try:
                return max(0.0, float(value) * scale)
            except ValueError:
                continue
    return None


def _parse_completion(body: bytes) -> ChatResult:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise TransientLLMError(f"the endpoint returned a malformed completion ({exc!r})") from None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return ChatResult(
        content=content,
        model=str(data.get("model", "")),
        finish_reason=choice.get("finish_reason"),
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cached_tokens=int(cached) if cached is not None else None,
    )
