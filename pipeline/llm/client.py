"""The model endpoint: the only module that talks to the `openai` SDK, and maps its errors to ours.

One shared AsyncOpenAI client per run, SDK retries off (our one retry layer is `retry`). Client CPU
is the limit at hundreds of requests in flight, so the hot path skips the SDK's per-call work that
buys nothing here (measured in bench/README.md):

- the request goes through the SDK's documented low-level `post` with a body we encode ourselves
  (the typed `create()` walks the whole 10 KB response schema through its type-driven transform on
  every call), and the response_format's JSON is encoded once per schema, not once per call;
- the reply JSON is read once, without the SDK building its response models;
- HTTP runs on the SDK's aiohttp transport (`DefaultAioHttpClient`): the default httpx pool scans
  every connection on every request, which grows with concurrency.

With a `Pacer` (pipeline.llm.pacing), every request, retries included, waits for a place in the run's
in-flight window and the rate limits it paces, and tells it how the request ended, with the reply's
headers (OpenAI's `x-ratelimit-*`) and token usage.

The SDK is imported when the first request is made, not at import time: it takes about a second,
and commands that call no model (help, rubric, export, a resume with nothing left) should not pay it.
An endpoint served on demand (`Endpoint.serve`, the embedded model's llama-server) is started then too,
so a resume with nothing left does not pay its start either.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from pipeline.errors import LLMError, SchemaUnsupportedError, TransientLLMError
from pipeline.llm.latencies import TIMEOUT_CAP, TIMEOUT_START
from pipeline.llm.pacing import Outcome, Pacer, Usage
from pipeline.llm.status_errors import error_for_status

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{4})[A-Za-z0-9_\-]+")
_SCHEMA_WORDS = re.compile(r"json_schema|response_format|structured output|guided", re.IGNORECASE)
# OpenAI answers 429 to one request larger than the tokens-per-minute limit: no wait will let it through.
_TOO_LARGE = re.compile(r"request too large", re.IGNORECASE)
# Distinct response formats are few (one per scope); the cap only guards against a caller that builds
# a new dict per call.
_FORMAT_CACHE_SIZE = 64

if TYPE_CHECKING:
    import openai



@dataclass(frozen=True)
class ChatResult:
    """The parts of a chat completion that kefu-qa keeps."""

    content: str
    model: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None
    refusal: str | None = None
    """The model's refusal text, which structured-output models send instead of content."""


@dataclass(frozen=True)
class Endpoint:
    """Where and how to call: base URL, key, timeout. The key never leaves this object."""

    base_url: str | None
    api_key: str | None
    timeout: float = TIMEOUT_START
    adaptive_timeout: bool = False
    """No timeout was set: with a pacer, each chat request's timeout follows the endpoint's recent latencies
    (`pipeline.llm.latencies`), up to `TIMEOUT_CAP`."""
    key_env: str = "OPENAI_API_KEY"
    """The environment variable the key was read from, for the hint when the endpoint refuses it."""
    serve: Callable[[], str] | None = None
    """A server started on demand (the embedded model): called once, before the first request, it starts the
    server and returns the base URL to call, which replaces `base_url`. A run that sends nothing never calls it."""


class LLMClient:
    """An OpenAI-compatible chat endpoint, shared by every grade of a run."""

    def __init__(self, endpoint: Endpoint, *, pacer: Pacer | None = None) -> None:
        self._endpoint = endpoint
        self.pacer = pacer
        """With a pacer, every request (retries included) waits for its window; without, none waits."""
        self._api_key = endpoint.api_key or "not-needed"
        self._base_url = endpoint.base_url
        self._sdk: openai.AsyncOpenAI | None = None
        self._adapts = endpoint.adaptive_timeout and pacer is not None
        self._last_success: float | None = None  # time.monotonic() of the last completion received
        # id -> (the dict, kept alive so its id stays unique; its JSON)
        self._formats: dict[int, tuple[dict[str, Any], str]] = {}

    def open(self) -> openai.AsyncOpenAI:
        """The SDK client, made (the SDK imported, an on-demand server started) on first use: a resume that sends
        nothing pays for neither. The grader opens it before timing a request, so that a server's start is not
        counted as the first request's latency; a blocking start, so that Ctrl-C or SIGTERM during it stops it."""
        if self._sdk is None:
            import openai

            if self._endpoint.serve is not None:
                self._base_url = self._endpoint.serve()
            timeout = TIMEOUT_CAP if self._adapts else self._endpoint.timeout
            self._sdk = openai.AsyncOpenAI(
                base_url=self._base_url,
                api_key=self._api_key,
                timeout=timeout,
                max_retries=0,  # our one retry layer is pipeline.llm.retry
                # The SDK's defaults (1,000 connections) allow hundreds in flight.
                http_client=openai.DefaultAioHttpClient(timeout=timeout),
            )
        return self._sdk

    async def close(self) -> None:
        """Close the connection pool, if a request opened one."""
        if self._sdk is not None:
            await self._sdk.close()

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
        client = self.open()
        import httpx2  # loaded with the SDK by open() already: these are dictionary look-ups
        import openai

        params = chat_request_params(messages, model=model, temperature=temperature, seed=seed,
                                     max_tokens=max_tokens)
        head = _dumps(params)
        body = f'{head[:-1]},"response_format":{self._format_json(response_format)}}}'.encode()
        pacer = self.pacer
        options: dict[str, Any] = {"headers": {"Content-Type": "application/json"}}
        if self._adapts and pacer is not None:
            options["timeout"] = pacer.latencies.timeout()
        sent_at = await pacer.acquire(len(body)) if pacer is not None else 0.0
        outcome: Outcome = "failed"
        retry_after: float | None = None
        headers: Mapping[str, str] | None = None
        usage: Usage | None = None
        try:
            # `options` is the SDK's RequestOptions TypedDict, which it does not export
            response = await client.post(  # type: ignore[call-overload]
                "/chat/completions", cast_to=httpx2.Response, content=body, options=options,
            )
            headers = response.headers
            result = _parse_completion(response.content)
            usage = Usage(result.prompt_tokens, result.completion_tokens)
            outcome = "ok"
        except openai.APIStatusError as exc:
            headers = exc.response.headers
            error = self._status_error(exc, response_format)
            if isinstance(error, TransientLLMError) and error.slow_down:
                outcome = "rate_limited" if error.status == 429 else "slow_down"
                retry_after = error.retry_after
            raise error from None
        except openai.APITimeoutError:
            raise TransientLLMError("the endpoint did not answer in time") from None
        except openai.APIConnectionError as exc:
            raise TransientLLMError(f"connection to the endpoint failed: {self._scrub(str(exc))}") from None
        finally:
            if pacer is not None:
                pacer.release(sent_at, outcome, retry_after, headers=headers, body_bytes=len(body), usage=usage)
        self._last_success = time.monotonic()
        return result

    def succeeded_since(self, moment: float) -> bool:
        """Whether any request has returned a completion after `moment` (time.monotonic())."""
        return self._last_success is not None and self._last_success >= moment

    @property
    def base_url(self) -> str:
        """Where requests go (never the key), for messages."""
        return self._base_url or "the OpenAI API"

    def _format_json(self, response_format: dict[str, Any]) -> str:
        hit = self._formats.get(id(response_format))
        if hit is None or hit[0] is not response_format:
            if len(self._formats) >= _FORMAT_CACHE_SIZE:
                self._formats.clear()
            hit = (response_format, _dumps(response_format))
            self._formats[id(response_format)] = hit
        return hit[1]

    def _scrub(self, text: str) -> str:
        """Never let the key (or anything key-shaped) into a message, log or stored grade."""
        if self._api_key and len(self._api_key) > 3:
            text = text.replace(self._api_key, "***")
        return _KEY_LIKE.sub(r"\1***", text)

    def _status_error(self, exc: openai.APIStatusError, response_format: dict[str, Any]) -> LLMError:
        status = exc.status_code
        message = self._scrub(_error_message(exc))
        if status == 429 and _TOO_LARGE.search(message):
            # Neither transient (retrying cannot help) nor fatal (the other chats are fine): this chat is unscored.
            return LLMError(f"HTTP 429: {message} (this chat alone is over the account's tokens-per-minute "
                            "limit; a model or tier with a higher limit can grade it)", status=status)
        if status == 400 and response_format.get("type") == "json_schema" and _SCHEMA_WORDS.search(message):
            return SchemaUnsupportedError(
                f"HTTP 400: {message}",
                status=status,
                hint="the endpoint does not take response_format json_schema; use --response-format json_object",
            )
        return error_for_status(status, f"HTTP {status}: {message}", retry_after=_retry_after(exc),
                                key_env=self._endpoint.key_env)


def chat_request_params(
    messages: list[dict[str, str]],
    *,
    model: str,
    temperature: float | None,
    seed: int | None,
    max_tokens: int | None,
) -> dict[str, Any]:
    """A chat completion's body without `response_format` (which `chat` encodes once per schema)."""
    params: dict[str, Any] = {"model": model, "messages": messages}
    if temperature is not None:
        params["temperature"] = temperature
    if seed is not None:
        params["seed"] = seed
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    return params


def chat_request_body(messages: list[dict[str, str]], *, model: str, response_format: dict[str, Any],
                      temperature: float | None, seed: int | None, max_tokens: int | None) -> dict[str, Any]:
    """The JSON body `LLMClient.chat` sends, key for key and in the same order: what batch files carry."""
    params = chat_request_params(messages, model=model, temperature=temperature, seed=seed, max_tokens=max_tokens)
    return {**params, "response_format": response_format}


def base_url_problem(url: str) -> str | None:
    """Why requests cannot be sent to `url`, or None: checked when the settings load, because the SDK parses a
    base URL only when it builds its client for the first request (a hostname that is not valid IDNA, a port
    that is not a number), and a port out of range or 0 fails later still, at each connection."""
    import httpx2  # the SDK's own URL parser (a twentieth of a second, not the SDK's second)

    try:
        httpx2.URL(url)
        port = urlsplit(url).port
    except (httpx2.InvalidURL, ValueError) as exc:
        return str(exc)
    return "port 0 cannot be connected to" if port == 0 else None


def parse_chat_completion(body: bytes) -> ChatResult:
    """A chat.completion body read as `LLMClient.chat` reads it, e.g. from a batch output line.

    Raises TransientLLMError when the body is not a completion.
    """
    return _parse_completion(body)


def _dumps(value: Any) -> str:
    """Compact UTF-8 JSON, as the SDK itself sends (Chinese stays one 3-byte character, not a 6-byte escape)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


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
        message = choice["message"]
        content = message.get("content") or ""
        refusal = message.get("refusal")
        finish_reason = choice.get("finish_reason")
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        if not isinstance(content, str) or not isinstance(finish_reason, str | None):
            raise TypeError("content and finish_reason must be strings")
        return ChatResult(
            content=content,
            model=str(data.get("model", "")),
            finish_reason=finish_reason,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=int(cached) if cached is not None else None,
            refusal=str(refusal) if refusal else None,
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError) as exc:
        raise TransientLLMError(f"the endpoint returned a malformed completion ({exc!r})") from None
