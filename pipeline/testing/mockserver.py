"""The mock model endpoint: an OpenAI-compatible HTTP server on 127.0.0.1 for tests, benchmarks, dry runs.

It is a real server, not a patched client, so the `openai` SDK's timeouts, dropped connections, status
codes and headers behave as they do in production. Handlers are asyncio coroutines on one event loop,
so thousands of slow requests can be in flight at once.

How `POST /v1/chat/completions` is answered, in this order:

0. `rate_limit`: past that many model calls in the sliding window, 429 at once, as a provider's
   per-minute limit answers (rejected calls do not count against the window); `request_bucket` and
   `token_bucket`: the same for a provider's token-bucket limits (`pipeline.testing.mock_limits`), whose
   `x-ratelimit-*` headers every reply carries when `rate_limit_headers` is set;
1. `latency` (every model call sleeps, without blocking other requests);
2. `api_key`: when set, a request without `Authorization: Bearer <api_key>` gets 401;
3. the next scripted item, if `script()` queued any (a `Delay` sleeps, then plays its `then`);
4. `error_rate`: that fraction of the remaining calls gets 500;
5. `reject_json_schema`: a `response_format` of type `json_schema` gets 400, as on servers without it;
6. a generated reply. The JSON schema it follows is, first found: `response_format.json_schema.schema`;
   else a schema written in the prompt between `<json_schema>` and `</json_schema>` (the last one);
   else the server's `fallback_schema`. With none, `json_object` requests get `{}` and others a short text.

Choices the schema leaves open (enum values, branches, lengths) are drawn from a generator seeded by
`seed` and a hash of the messages, so an identical request gets an identical reply; `choice="random"`
draws from one seeded stream instead, so repeats differ but a run is still reproducible.

The Batch API is served too (`pipeline.testing.batch_api`): files, batches and `script_api()` faults.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Self, TypeAlias, cast

from aiohttp import web

from pipeline.testing.batch_api import BatchApi, Handler
from pipeline.testing.chat import estimate_tokens, message_text, prompt_tokens_of, reasoning_padding, schema_for
from pipeline.testing.instances import InstanceUnsupportedError, JSONSchema, generate_instance
from pipeline.testing.mock_limits import BucketLimit, BucketLimits
from pipeline.testing.prefix_cache import PrefixCache
from pipeline.testing.records import RequestRecord, ServerStats
from pipeline.testing.script import (
    ApiCall,
    Content,
    Delay,
    Drop,
    Fault,
    Latency,
    Reply,
    Scripted,
    fault_response,
    openai_error,
)

_PLAIN_REPLY = "好的，已收到。"


_Answer: TypeAlias = Callable[[Any, str | None], web.StreamResponse]
"""An endpoint's normal reply to a JSON body; the text, when given, is scripted content to put in it."""


# --- the server ----------------------------------------------------------------------------------


class MockServer:
    """An OpenAI-compatible server on 127.0.0.1.

    Run it from synchronous code with `with MockServer() as server:` (its own event loop in a daemon
    thread) or inside a running loop with `async with MockServer() as server:`; both go through
    `start_async`/`stop_async`. Every constructor argument is also a plain attribute of the same name:
    tests may change one between requests, and each request reads it when it needs it.

    - `port`: 0 picks a free port; `base_url` tells which.
    - `seed`, `choice`: see the module docstring; `seed` also drives latency and `error_rate` draws.
    - `fallback_schema`: the schema for requests that bring none (json_object or no response_format).
    - `latency`: seconds, or a function of a `random.Random` such as `lognormal_latency(0.8)`.
    - `error_rate`: fraction of model calls answered 500 (after any scripted items).
    - `reject_json_schema`: answer `response_format` type json_schema with 400, as vLLM-era servers did.
    - `pad_chars`: this many characters of `reasoning_content` in each reply, to make replies heavier.
    - `api_key`: when set, model calls and /v1/models need `Authorization: Bearer <api_key>`.
    - `record_bodies`: False keeps records to timings, path and status (no body, no headers).
    - `models`: ids listed by /v1/models; the first is echoed when a request names no model.
    - `prefix_cache_size`: how many distinct first messages the simulated prefix cache remembers.
    - `batch_complete_after_polls`: a batch runs and finishes on this retrieve (before it: "in_progress").
    - `batch_expire_after_lines`: None, or run only this many lines of a batch and end it "expired".
    - `rate_limit`: None, or (calls, seconds): at most that many model calls accepted in any window of
      that many seconds; the rest get 429 at once, with `Retry-After` (the seconds until a call
      leaves the window) when `rate_limit_retry_after` is set.
    - `request_bucket`, `token_bucket`: None, or a `BucketLimit(burst, per_second)`: a provider's token
      bucket for requests or for tokens (prompt tokens taken on arrival, completion tokens on reply); a
      call that does not fit gets 429 at once, with `Retry-After` (seconds until it fits) when
      `rate_limit_retry_after` is set. Changing either starts a full bucket.
    - `rate_limit_headers`: with a bucket, every model call's reply carries OpenAI's `x-ratelimit-*` headers.
    Both batch settings are read when a batch is created, so batches made under different settings coexist.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        seed: int = 0,
        choice: Literal["content", "random"] = "content",
        fallback_schema: JSONSchema | None = None,
        latency: Latency = 0.0,
        error_rate: float = 0.0,
        reject_json_schema: bool = False,
        pad_chars: int = 0,
        api_key: str | None = None,
        record_bodies: bool = True,
        models: tuple[str, ...] = ("mock-model",),
        prefix_cache_size: int = 1024,
        batch_complete_after_polls: int = 1,
        batch_expire_after_lines: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        rate_limit_retry_after: bool = False,
        request_bucket: BucketLimit | None = None,
        token_bucket: BucketLimit | None = None,
        rate_limit_headers: bool = False,
    ) -> None:
        self.port = port
        self.seed = seed
        self.choice = choice
        self.fallback_schema = fallback_schema
        self.latency = latency
        self.error_rate = error_rate
        self.reject_json_schema = reject_json_schema
        self.pad_chars = pad_chars
        self.api_key = api_key
        self.record_bodies = record_bodies
        self.models = models
        self._rng = random.Random(seed)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self._records: list[RequestRecord] = []
        self._by_status: Counter[int] = Counter()
        self._unanswered = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._prefixes = PrefixCache(prefix_cache_size)
        self.batch_complete_after_polls = batch_complete_after_polls
        self.batch_expire_after_lines = batch_expire_after_lines
        self.rate_limit = rate_limit
        self.rate_limit_retry_after = rate_limit_retry_after
        self._accepted: deque[float] = deque()  # arrival times of the calls in the rate-limit window
        self.request_bucket = request_bucket
        self.token_bucket = token_bucket
        self.rate_limit_headers = rate_limit_headers
        self._buckets: tuple[tuple[BucketLimit | None, BucketLimit | None], BucketLimits] | None = None
        self._batch_api = BatchApi(
            ids=self._ids, lock=self._lock, check_key=self._check_key, answer_line=self._answer_batch_line,
            settings=lambda: (self.batch_complete_after_polls, self.batch_expire_after_lines),
        )
        self._runner: web.AppRunner | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --

    @property
    def base_url(self) -> str:
        """What to pass as the SDK's `base_url`, e.g. http://127.0.0.1:40123/v1."""
        if self._runner is None:
            raise RuntimeError("the mock server is not running")
        return f"http://127.0.0.1:{self.port}/v1"

    async def start_async(self) -> None:
        """Listen on 127.0.0.1 in the running event loop; with port 0 the OS picks a free port."""
        # handler_cancellation: a client that gives up (timeout) cancels its sleeping handler.
        # shutdown_timeout: at stop, in-flight handlers are cut off quickly instead of after 60 s.
        runner = web.AppRunner(
            self._build_app(), access_log=None, handler_cancellation=True, shutdown_timeout=0.25
        )
        await runner.setup()
        # A backlog well above the 256+ connections a benchmark opens at once.
        site = web.TCPSite(runner, "127.0.0.1", self.port, backlog=4096)
        await site.start()
        self.port = runner.addresses[0][1]
        self._runner = runner

    async def stop_async(self) -> None:
        """Stop listening and cut off any request still in flight."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    def start(self) -> None:
        """Run the server on its own event loop in a daemon thread, returning once it listens."""
        if self._thread is not None:
            raise RuntimeError("the mock server is already running")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="mockserver", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start_async(), loop).result(timeout=30)
        except BaseException:
            self._close_thread_loop(loop, thread)
            raise
        self._thread_loop, self._thread = loop, thread

    def stop(self) -> None:
        """Stop a server started with `start()`."""
        loop, thread = self._thread_loop, self._thread
        if loop is None or thread is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(timeout=30)
        finally:
            self._close_thread_loop(loop, thread)
            self._thread_loop = self._thread = None

    @staticmethod
    def _close_thread_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        await self.start_async()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # -- scripting and recording --

    def script(self, *items: Scripted) -> None:
        """Queue answers for the next model calls, used in order before the generated default."""
        with self._lock:
            self._script.extend(items)

    def script_api(self, call: ApiCall, *items: Fault | Drop) -> None:
        """Queue faults for the next files or batches calls of one kind (see the module docstring)."""
        self._batch_api.script(call, *items)

    @property
    def script_remaining(self) -> int:
        """How many scripted answers have not been used yet."""
        with self._lock:
            return len(self._script)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every request so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._records)

    @property
    def max_in_flight(self) -> int:
        """The most requests that were being handled at the same moment."""
        with self._lock:
            return self._max_in_flight

    def stats(self) -> ServerStats:
        """The counters, read together."""
        with self._lock:
            return ServerStats(
                requests=len(self._records),
                in_flight=self._in_flight,
                max_in_flight=self._max_in_flight,
                by_status=dict(self._by_status),
                unanswered=self._unanswered,
            )

    def reset(self) -> None:
        """Forget recorded requests, counters, the prefix cache and unused script; settings stay."""
        with self._lock:
            self._script.clear()
            self._records.clear()
            self._by_status.clear()
            self._unanswered = 0
            self._max_in_flight = self._in_flight
            self._prefixes.clear()
            self._rng = random.Random(self.seed)
            self._batch_api.reset()
            self._accepted.clear()
            self._buckets = None

    @property
    def batches_created(self) -> int:
        """Batches created since start or `reset()`: each one a provider would bill."""
        return self._batch_api.batches_created

    # -- HTTP plumbing --

    def _build_app(self) -> web.Application:
        # A new endpoint is one handler plus one line here (files and batches: in BatchApi.routes).
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v1/chat/completions", self._tracked(self._chat_completions)),
                web.get("/v1/models", self._tracked(self._list_models)),
                web.get("/health", self._tracked(self._health)),
                *(web.route(method, path, self._tracked(handler))
                  for method, path, handler in self._batch_api.routes()),
            ]
        )
        return app

    def _tracked(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """Wrap a route handler so the request is recorded and counted in flight, whatever happens."""

        async def tracked(request: web.Request) -> web.StreamResponse:
            record = RequestRecord(
                method=request.method,
                path=request.path,
                arrived_monotonic=time.monotonic(),
                arrived_at=datetime.now(UTC),
                has_authorization="Authorization" in request.headers,
                headers=None,
            )
            if self.record_bodies:
                record.headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
            with self._lock:
                self._records.append(record)
                self._in_flight += 1
                self._max_in_flight = max(self._max_in_flight, self._in_flight)
            try:
                body = await _read_json(request)
                if self.record_bodies:
                    record.body = body
                response = await handler(request, body)
                transport = request.transport
                if transport is not None and not transport.is_closing():
                    record.status = response.status
                return response
            finally:
                record.finished_monotonic = time.monotonic()
                record.finished_at = datetime.now(UTC)
                with self._lock:
                    self._in_flight -= 1
                    if record.status is None:
                        self._unanswered += 1
                    else:
                        self._by_status[record.status] += 1

        return tracked

    async def _health(self, request: web.Request, body: Any) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def _list_models(self, request: web.Request, body: Any) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "kefu-qa-mock"} for name in self.models
        ]
        return web.json_response({"object": "list", "data": data})

    def _check_key(self, request: web.Request) -> web.StreamResponse | None:
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return fault_response(Fault.unauthorized())
        return None

    async def _model_call(self, request: web.Request, body: Any, answer: _Answer) -> web.StreamResponse:
        """Steps 0–4 of the module docstring, shared by every endpoint that stands for a model call."""
        if (limited := self._over_rate_limit()) is not None:
            return limited
        buckets = self._current_buckets()
        if buckets is None:
            return await self._answer_model_call(request, body, answer)
        refusal = buckets.admit(prompt_tokens_of(body), time.monotonic())
        response: web.StreamResponse
        if refusal is not None:
            response = fault_response(Fault.rate_limited(
                round(refusal.wait, 3) if self.rate_limit_retry_after else None, refusal.kind))
        else:
            response = await self._answer_model_call(request, body, answer)
            if response.status == 200 and isinstance(response, web.Response) and isinstance(response.body, bytes):
                usage = json.loads(response.body).get("usage") or {}
                buckets.charge_completion(int(usage.get("completion_tokens") or 0), time.monotonic())
        if self.rate_limit_headers:
            response.headers.update(buckets.headers(time.monotonic()))
        return response

    def _current_buckets(self) -> BucketLimits | None:
        """The token buckets for the current `request_bucket`/`token_bucket` settings (new when they change)."""
        shape = (self.request_bucket, self.token_bucket)
        if shape == (None, None):
            return None
        with self._lock:
            if self._buckets is None or self._buckets[0] != shape:
                self._buckets = shape, BucketLimits(*shape, now=time.monotonic())
            return self._buckets[1]

    async def _answer_model_call(self, request: web.Request, body: Any, answer: _Answer) -> web.StreamResponse:
        """Steps 1-6 of the module docstring."""
        latency = self.latency
        await asyncio.sleep(latency(self._rng) if callable(latency) else latency)
        if (denied := self._check_key(request)) is not None:
            return denied
        with self._lock:
            item = self._script.popleft() if self._script else None
        if isinstance(item, Delay):
            await asyncio.sleep(item.seconds)
            item = item.then
        if item is None:
            if self.error_rate > 0 and self._rng.random() < self.error_rate:
                return fault_response(Fault.server_error())
            return answer(body, None)
        if isinstance(item, Drop):
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # never sent: aiohttp sees the closed transport
        if isinstance(item, Fault):
            return fault_response(item)
        if isinstance(item, Reply):
            return web.json_response(item.body)
        return answer(body, item.text)

    def _over_rate_limit(self) -> web.Response | None:
        """429 when the sliding window is full, else count this call in it."""
        if self.rate_limit is None:
            return None
        calls, seconds = self.rate_limit
        now = time.monotonic()
        with self._lock:
            window = self._accepted
            while window and window[0] <= now - seconds:
                window.popleft()
            if len(window) < calls:
                window.append(now)
                return None
            wait = window[0] + seconds - now
        return fault_response(Fault.rate_limited(round(wait, 3) if self.rate_limit_retry_after else None))

    async def _chat_completions(self, request: web.Request, body: Any) -> web.StreamResponse:
        return await self._model_call(request, body, self._answer_chat)

    def _answer_chat(self, body: Any, content: str | None) -> web.StreamResponse:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return fault_response(Fault.bad_request("the body must be a JSON object with a 'messages' list"))
        if body.get("stream"):
            return fault_response(Fault.bad_request("the mock server does not stream", param="stream"))
        response_format = body.get("response_format") or {}
        if not isinstance(response_format, dict):
            return fault_response(
                Fault.bad_request("response_format must be an object", param="response_format")
            )
        if self.reject_json_schema and response_format.get("type") == "json_schema":
            return fault_response(
                Fault.bad_request(
                    "response_format type json_schema is not supported", param="response_format"
                )
            )
        messages: list[Any] = body["messages"]
        if content is None:
            try:
                content = self._generate_content(messages, response_format)
            except InstanceUnsupportedError as exc:
                return fault_response(Fault.bad_request(str(exc), param="response_format"))
        texts = [message_text(message) for message in messages]
        with self._lock:
            cached_chars = self._prefixes.match_and_add(texts[0]) if texts else 0
        prompt_tokens = estimate_tokens(sum(len(text) for text in texts))
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.pad_chars > 0:
            message["reasoning_content"] = reasoning_padding(self.pad_chars)
        completion_tokens = estimate_tokens(len(content) + self.pad_chars)
        return web.json_response(
            {
                "id": f"chatcmpl-mock-{next(self._ids)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or self.models[0],
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                    "prompt_tokens_details": {"cached_tokens": cached_chars // 2},
                },
            }
        )

    def _generate_content(self, messages: list[Any], response_format: Mapping[str, Any]) -> str:
        schema = schema_for(messages, response_format, self.fallback_schema)
        if schema is None:
            return "{}" if response_format.get("type") == "json_object" else _PLAIN_REPLY
        if self.choice == "random":
            rng = random.Random(self._rng.getrandbits(64))
        else:
            digest = hashlib.blake2b(
                json.dumps([self.seed, messages], sort_keys=True, ensure_ascii=False).encode(), digest_size=8
            ).digest()
            rng = random.Random(int.from_bytes(digest, "big"))
        return json.dumps(generate_instance(schema, rng), ensure_ascii=False)


    def _answer_batch_line(self, body: Any) -> tuple[int, Any]:
        """Steps 3-6 for one batch line: its status code and response body."""
        with self._lock:
            item = self._script.popleft() if self._script else None
        if isinstance(item, Delay):
            item = item.then  # nobody waits on a batch line: only what follows the delay counts
        if isinstance(item, Drop):
            item = Fault.server_error()  # a batch line has no connection to drop; providers report a 500
        if item is None and self.error_rate > 0 and self._rng.random() < self.error_rate:
            item = Fault.server_error()
        if isinstance(item, Fault):
            return item.status, item.body if isinstance(item.body, dict) else openai_error(item.body, "server_error")
        if isinstance(item, Reply):
            return 200, item.body
        # _answer_chat always builds a web.Response (json_response or a fault), whose body is bytes.
        response = cast(web.Response, self._answer_chat(body, item.text if isinstance(item, Content) else None))
        return response.status, json.loads(cast(bytes, response.body))


async def _read_json(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    with contextlib.suppress(ValueError):
        return json.loads(await request.read())
    return None
