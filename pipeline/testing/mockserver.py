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

The Batch API is served too: `POST /v1/files` (multipart upload), `GET /v1/files` (list, newest first),
`GET /v1/files/{id}`, `/v1/files/{id}/content` and `DELETE /v1/files/{id}`, `POST /v1/batches`, `GET /v1/batches`
(list, newest first), `GET /v1/batches/{id}` and `POST /v1/batches/{id}/cancel`. `script_api()` queues faults
for these calls: a `Fault` is answered instead of the call, a `Drop` closes the connection after the call was
done (the provider did it, the client never hears: a lost response).
A batch runs when it is polled for the `batch_complete_after_polls`-th time: each line goes through
steps 3-6 above (scripted items and `error_rate` included, no latency), a 200 lands in the output
file and anything else in the error file. With `batch_expire_after_lines` set, only that many lines
run and the batch ends "expired", the rest in the error file as `batch_expired`, as OpenAI reports
them. A file with an unreadable line fails validation as a whole ("failed", nothing runs).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import itertools
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, Literal, NamedTuple, Self, TypeAlias, TypeVar, cast

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from pipeline.llm.ratelimit_headers import LimitKind
from pipeline.testing.mock_limits import BucketLimit, BucketLimits

Latency: TypeAlias = float | Callable[[random.Random], float]
"""Seconds to wait before answering: a constant, or a function drawing from the server's seeded generator."""

JSONSchema: TypeAlias = Mapping[str, Any]

_EMBEDDED_SCHEMA = re.compile(r"<json_schema>(.*?)</json_schema>", re.DOTALL)
_PHRASES = ("好的", "亲，您好", "已为您核实", "物流延迟", "退款已处理", "ok", "refund", "order 1234")
_PLAIN_REPLY = "好的，已收到。"
_PADDING = "先看顾客的问题，再看客服的回答。"
# Past this depth only required properties and minItems items are generated, so recursive models end.
_OPTIONAL_DEPTH = 6
_MAX_DEPTH = 32
# Keywords whose constraints the generator cannot honour: refusing beats replying with invalid JSON.
_UNSUPPORTED = ("pattern", "multipleOf", "not", "if", "patternProperties", "minProperties", "contains")
_FORMATS = {
    "date-time": "2024-06-18T08:00:00Z",
    "date": "2024-06-18",
    "time": "08:00:00Z",
    "email": "kefu@example.com",
    "uri": "https://example.com/",
}


# --- scripted replies ------------------------------------------------------------------------------


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


class SchemaUnsupportedError(ValueError):
    """The schema asks for something `generate_instance` cannot satisfy; the server answers 400 with it."""


def generate_instance(schema: JSONSchema, rng: random.Random) -> Any:
    """A JSON value valid for `schema`, with every open choice drawn from `rng`.

    Supports `$ref` into the same document (`$defs`/`definitions`), `const`, `enum`, `anyOf`/`oneOf`
    (one branch, preferring non-null; for `oneOf` the branches are assumed disjoint), `allOf` (merged),
    `type` lists, object `properties`/`required`/`additionalProperties`, `items`/`minItems`/
    `maxItems`/`uniqueItems`, `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`,
    `minLength`/`maxLength` and a few string `format`s. Keywords in `_UNSUPPORTED` raise.
    """
    return _generate(schema, schema, rng, 0)


def _generate(node: JSONSchema, root: JSONSchema, rng: random.Random, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise SchemaUnsupportedError(f"schema nests deeper than {_MAX_DEPTH} levels (a required $ref cycle?)")
    if bad := [key for key in _UNSUPPORTED if key in node]:
        raise SchemaUnsupportedError(f"the mock server cannot honour {', '.join(bad)}")
    if "$ref" in node:
        return _generate(_resolve_ref(root, node["$ref"]), root, rng, depth + 1)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        if not node["enum"]:
            raise SchemaUnsupportedError("an empty enum admits no value")
        return rng.choice(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _generate(_pick_branch(node[key], root, rng), root, rng, depth + 1)
    if "allOf" in node:
        return _generate(_merge_all_of(node, root), root, rng, depth + 1)
    kind = _pick_type(node, rng)
    if kind == "object":
        return _generate_object(node, root, rng, depth)
    if kind == "array":
        return _generate_array(node, root, rng, depth)
    if kind == "integer":
        return _generate_integer(node, rng)
    if kind == "number":
        return _generate_number(node, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _generate_string(node, rng)


def _resolve_ref(root: JSONSchema, ref: str) -> JSONSchema:
    if not ref.startswith("#"):
        raise SchemaUnsupportedError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            raise SchemaUnsupportedError(f"$ref {ref!r} points nowhere")
        node = node[key]
    if not isinstance(node, Mapping):
        raise SchemaUnsupportedError(f"$ref {ref!r} is not a schema")
    return node


def _is_null(branch: JSONSchema, root: JSONSchema) -> bool:
    resolved = _resolve_ref(root, branch["$ref"]) if "$ref" in branch else branch
    return resolved.get("type") == "null"


def _pick_branch(branches: list[JSONSchema], root: JSONSchema, rng: random.Random) -> JSONSchema:
    # Non-null branches first: a reply full of nulls exercises nothing downstream.
    useful = [branch for branch in branches if not _is_null(branch, root)]
    return rng.choice(useful or branches)


def _merge_all_of(node: JSONSchema, root: JSONSchema) -> JSONSchema:
    merged: dict[str, Any] = {key: value for key, value in node.items() if key != "allOf"}
    for part in node["allOf"]:
        resolved = _resolve_ref(root, part["$ref"]) if "$ref" in part else part
        for key, value in resolved.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged[key] = value
    return merged


def _pick_type(node: JSONSchema, rng: random.Random) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        useful = [name for name in kind if name != "null"]
        return str(rng.choice(useful)) if useful else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    return "string"


def _generate_object(node: JSONSchema, root: JSONSchema, rng: random.Random, depth: int) -> dict[str, Any]:
    properties: Mapping[str, JSONSchema] = node.get("properties", {})
    required: list[str] = list(node.get("required", []))
    names = list(properties) if depth < _OPTIONAL_DEPTH else [n for n in properties if n in required]
    value = {name: _generate(properties[name], root, rng, depth + 1) for name in names}
    extra = node.get("additionalProperties", True)
    for name in required:
        if name not in value:
            if extra is False:
                raise SchemaUnsupportedError(f"required property {name!r} is not allowed by the schema")
            value[name] = _generate(extra if isinstance(extra, Mapping) else {}, root, rng, depth + 1)
    return value


def _generate_array(node: JSONSchema, root: JSONSchema, rng: random.Random, depth: int) -> list[Any]:
    low = int(node.get("minItems", 0))
    high = min(int(node.get("maxItems", max(low, 2))), max(low, 2))
    if depth >= _OPTIONAL_DEPTH:
        high = low
    if low > high:
        raise SchemaUnsupportedError(f"minItems {low} > maxItems {high}")
    items: JSONSchema = node.get("items", {})
    count = rng.randint(low, high)
    if not node.get("uniqueItems"):
        return [_generate(items, root, rng, depth + 1) for _ in range(count)]
    unique: dict[str, Any] = {}
    for _ in range(10 * count):
        if len(unique) == count:
            break
        item = _generate(items, root, rng, depth + 1)
        unique.setdefault(json.dumps(item, sort_keys=True), item)
    if len(unique) < low:
        raise SchemaUnsupportedError(f"could not draw {low} distinct items")
    return list(unique.values())


def _bounds(node: JSONSchema, step: float) -> tuple[float | None, float | None]:
    """The inclusive range allowed by minimum/maximum and their exclusive forms (`step` inside those)."""
    low, high = node.get("minimum"), node.get("maximum")
    if isinstance(node.get("exclusiveMinimum"), int | float):
        low = node["exclusiveMinimum"] + step
    if isinstance(node.get("exclusiveMaximum"), int | float):
        high = node["exclusiveMaximum"] - step
    return low, high


def _generate_integer(node: JSONSchema, rng: random.Random) -> int:
    low, high = _bounds(node, 1)
    first = 0 if low is None else math.ceil(low)
    last = first + 10 if high is None else math.floor(high)
    if low is None and high is not None:
        first = last - 10
    if first > last:
        raise SchemaUnsupportedError(f"no integer between {low} and {high}")
    return rng.randint(first, last)


def _generate_number(node: JSONSchema, rng: random.Random) -> float:
    low, high = _bounds(node, 1e-9)
    first = 0.0 if low is None else float(low)
    last = first + 10.0 if high is None else float(high)
    if low is None and high is not None:
        first = last - 10.0
    if first > last:
        raise SchemaUnsupportedError(f"no number between {low} and {high}")
    # Away from the ends, so exclusive bounds hold without float edge cases.
    return first + (last - first) * rng.uniform(0.25, 0.75)


def _generate_string(node: JSONSchema, rng: random.Random) -> str:
    fmt = node.get("format")
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
    text = text or rng.choice(_PHRASES)
    min_length = int(node.get("minLength", 0))
    if len(text) < min_length:
        text += "好" * (min_length - len(text))
    if "maxLength" in node:
        text = text[: int(node["maxLength"])]
    return text


# --- prefix caching ------------------------------------------------------------------------------


def _common_prefix_length(a: str, b: str) -> int:
    # Binary search over slice comparisons: C-speed even for long system prompts.
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


class _PrefixCache:
    """The longest common prefix of a text with the texts seen before it, as a server's prefix cache reuses.

    Among sorted strings the longest common prefix with any of them is found at a neighbour of the
    insertion point, so a lookup is a bisect and two comparisons. Bounded, oldest out, so a benchmark of
    100k distinct prompts does not hold them all.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._sorted: list[str] = []
        self._age: dict[str, None] = {}

    def match_and_add(self, text: str) -> int:
        at = bisect.bisect_left(self._sorted, text)
        best = max(
            (
                _common_prefix_length(text, self._sorted[i])
                for i in (at - 1, at)
                if 0 <= i < len(self._sorted)
            ),
            default=0,
        )
        if text not in self._age:
            self._sorted.insert(at, text)
            self._age[text] = None
            if len(self._age) > self._capacity:
                oldest = next(iter(self._age))
                del self._age[oldest]
                del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        return best

    def clear(self) -> None:
        self._sorted.clear()
        self._age.clear()


# --- recording -----------------------------------------------------------------------------------


@dataclass(slots=True)
class RequestRecord:
    """One request as the server saw it.

    A slotted dataclass rather than a pydantic model: a benchmark makes 100k of these, and they never
    cross a process boundary.
    """

    method: str
    path: str
    arrived_monotonic: float
    arrived_at: datetime
    has_authorization: bool
    headers: dict[str, str] | None
    """Request headers without Authorization; None while `record_bodies` is off."""
    body: Any = None
    """The parsed JSON body; None without one, when it was not JSON, or while `record_bodies` is off."""
    status: int | None = None
    """The status sent; None when no response went out (a scripted Drop, or the client left first)."""
    finished_monotonic: float | None = None
    finished_at: datetime | None = None


class ServerStats(NamedTuple):
    """Counters since start or the last `reset()`."""

    requests: int
    in_flight: int
    max_in_flight: int
    by_status: dict[int, int]
    unanswered: int


@dataclass(slots=True)
class _StoredFile:
    """A file uploaded to, or written by, the mock server."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.data), "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed"}


@dataclass(slots=True)
class _MockBatch:
    """A batch and where it is in its life; its transition settings are fixed when it is created."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: Any
    created_at: int
    complete_after_polls: int
    expire_after_lines: int | None
    status: str = "validating"
    polls: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, "completed": 0, "failed": 0})
    errors: list[dict[str, Any]] = field(default_factory=list)
    times: dict[str, int] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        stamps = ("in_progress_at", "finalizing_at", "completed_at", "failed_at", "expired_at", "cancelling_at",
                  "cancelled_at")
        return {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "input_file_id": self.input_file_id,
            "completion_window": "24h", "status": self.status, "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id, "created_at": self.created_at,
            "expires_at": self.created_at + 24 * 3600, "request_counts": dict(self.counts),
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "metadata": self.metadata, **{name: self.times.get(name) for name in stamps},
        }


_Found = TypeVar("_Found", _StoredFile, _MockBatch)

_BATCH_FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."


_Handler: TypeAlias = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
"""A route handler: the aiohttp request and its JSON body, already parsed (None if absent or not JSON)."""
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
        self._prefixes = _PrefixCache(prefix_cache_size)
        self.batch_complete_after_polls = batch_complete_after_polls
        self.batch_expire_after_lines = batch_expire_after_lines
        self.rate_limit = rate_limit
        self.rate_limit_retry_after = rate_limit_retry_after
        self._accepted: deque[float] = deque()  # arrival times of the calls in the rate-limit window
        self.request_bucket = request_bucket
        self.token_bucket = token_bucket
        self.rate_limit_headers = rate_limit_headers
        self._buckets: tuple[tuple[BucketLimit | None, BucketLimit | None], BucketLimits] | None = None
        self._files: dict[str, _StoredFile] = {}
        self._batches: dict[str, _MockBatch] = {}
        self._api_script: dict[str, deque[Fault | Drop]] = {}
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
        with self._lock:
            self._api_script.setdefault(call, deque()).extend(items)

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
            self._files.clear()
            self._batches.clear()
            self._api_script.clear()
            self._accepted.clear()
            self._buckets = None

    # -- HTTP plumbing --

    def _build_app(self) -> web.Application:
        # New endpoints (files, batches) are one handler each plus one line here.
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.add_routes(
            [
                web.post("/v1/chat/completions", self._tracked(self._chat_completions)),
                web.get("/v1/models", self._tracked(self._list_models)),
                web.get("/health", self._tracked(self._health)),
                web.post("/v1/files", self._tracked(self._upload_file)),
                web.get("/v1/files", self._tracked(self._list_files)),
                web.get("/v1/files/{file_id}", self._tracked(self._get_file)),
                web.delete("/v1/files/{file_id}", self._tracked(self._delete_file)),
                web.get("/v1/files/{file_id}/content", self._tracked(self._get_file_content)),
                web.post("/v1/batches", self._tracked(self._create_batch)),
                web.get("/v1/batches", self._tracked(self._list_batches)),
                web.get("/v1/batches/{batch_id}", self._tracked(self._retrieve_batch)),
                web.post("/v1/batches/{batch_id}/cancel", self._tracked(self._cancel_batch)),
            ]
        )
        return app

    def _tracked(self, handler: _Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
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
            return _fault_response(Fault.unauthorized())
        return None

    async def _model_call(self, request: web.Request, body: Any, answer: _Answer) -> web.StreamResponse:
        """Steps 0–4 of the module docstring, shared by every endpoint that stands for a model call."""
        if (limited := self._over_rate_limit()) is not None:
            return limited
        buckets = self._current_buckets()
        if buckets is None:
            return await self._answer_model_call(request, body, answer)
        refusal = buckets.admit(_prompt_tokens(body), time.monotonic())
        response: web.StreamResponse
        if refusal is not None:
            response = _fault_response(Fault.rate_limited(
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
                return _fault_response(Fault.server_error())
            return answer(body, None)
        if isinstance(item, Drop):
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # never sent: aiohttp sees the closed transport
        if isinstance(item, Fault):
            return _fault_response(item)
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
        return _fault_response(Fault.rate_limited(round(wait, 3) if self.rate_limit_retry_after else None))

    async def _chat_completions(self, request: web.Request, body: Any) -> web.StreamResponse:
        return await self._model_call(request, body, self._answer_chat)

    def _answer_chat(self, body: Any, content: str | None) -> web.StreamResponse:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _fault_response(Fault.bad_request("the body must be a JSON object with a 'messages' list"))
        if body.get("stream"):
            return _fault_response(Fault.bad_request("the mock server does not stream", param="stream"))
        response_format = body.get("response_format") or {}
        if not isinstance(response_format, dict):
            return _fault_response(
                Fault.bad_request("response_format must be an object", param="response_format")
            )
        if self.reject_json_schema and response_format.get("type") == "json_schema":
            return _fault_response(
                Fault.bad_request(
                    "response_format type json_schema is not supported", param="response_format"
                )
            )
        messages: list[Any] = body["messages"]
        if content is None:
            try:
                content = self._generate_content(messages, response_format)
            except SchemaUnsupportedError as exc:
                return _fault_response(Fault.bad_request(str(exc), param="response_format"))
        texts = [_message_text(message) for message in messages]
        with self._lock:
            cached_chars = self._prefixes.match_and_add(texts[0]) if texts else 0
        prompt_tokens = _estimate_tokens(sum(len(text) for text in texts))
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if self.pad_chars > 0:
            message["reasoning_content"] = _reasoning_padding(self.pad_chars)
        completion_tokens = _estimate_tokens(len(content) + self.pad_chars)
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
        schema = self._schema_for(messages, response_format)
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

    def _schema_for(self, messages: list[Any], response_format: Mapping[str, Any]) -> JSONSchema | None:
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, Mapping):
                raise SchemaUnsupportedError("response_format.json_schema.schema is missing")
            return schema
        embedded = [
            match for message in messages for match in _EMBEDDED_SCHEMA.findall(_message_text(message))
        ]
        if embedded:
            try:
                schema = json.loads(embedded[-1])
            except json.JSONDecodeError as exc:
                raise SchemaUnsupportedError(f"the <json_schema> in the prompt is not JSON: {exc}") from exc
            if not isinstance(schema, Mapping):
                raise SchemaUnsupportedError("the <json_schema> in the prompt is not a JSON object")
            return schema
        return self.fallback_schema


    # -- files and batches (handlers run on the server's one event loop, so they share state without locks) --

    def _store_file(self, filename: str, purpose: str, data: bytes) -> _StoredFile:
        stored = _StoredFile(f"file-mock-{next(self._ids)}", filename, purpose, data, int(time.time()))
        self._files[stored.id] = stored
        return stored

    def _find(self, request: web.Request, table: dict[str, _Found], key: str) -> _Found | web.StreamResponse:
        """The file or batch the path names, or the response to send instead (401, 404)."""
        if (denied := self._check_key(request)) is not None:
            return denied
        found = table.get(request.match_info[key])
        if found is None:
            message = f"No such object: {request.match_info[key]}"
            return _fault_response(Fault(status=404, body=openai_error(message, "invalid_request_error", param=key)))
        return found

    def _scripted_api(self, call: ApiCall) -> Fault | Drop | None:
        with self._lock:
            queue = self._api_script.get(call)
            return queue.popleft() if queue else None

    @staticmethod
    def _answer_api(request: web.Request, scripted: Drop | None, answer: Any) -> web.StreamResponse:
        """The call's answer, or (scripted Drop) no answer at all although the call was done."""
        if scripted is None:
            return web.json_response(answer)
        if request.transport is not None:
            request.transport.abort()
        return web.Response(status=204)  # never sent: aiohttp sees the closed transport

    async def _upload_file(self, request: web.Request, body: Any) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        if isinstance(scripted := self._scripted_api("files.create"), Fault):
            return _fault_response(scripted)
        parts = _multipart_fields(request.headers.get("Content-Type", ""), await request.read())
        if "file" not in parts or "purpose" not in parts:
            return _fault_response(Fault.bad_request("a multipart body with 'file' and 'purpose' is required"))
        filename, data = parts["file"]
        stored = self._store_file(filename or "upload.jsonl", parts["purpose"][1].decode("utf-8"), data)
        return self._answer_api(request, scripted, stored.describe())

    async def _list_files(self, request: web.Request, body: Any) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        purpose = request.query.get("purpose")
        files = [f.describe() for f in self._files.values() if purpose is None or f.purpose == purpose]
        return web.json_response(_list_page(files, request, default_limit=10000))

    async def _delete_file(self, request: web.Request, body: Any) -> web.StreamResponse:
        found = self._find(request, self._files, "file_id")
        if isinstance(found, web.StreamResponse):
            return found
        del self._files[found.id]
        return web.json_response({"id": found.id, "object": "file", "deleted": True})

    async def _get_file(self, request: web.Request, body: Any) -> web.StreamResponse:
        found = self._find(request, self._files, "file_id")
        return found if isinstance(found, web.StreamResponse) else web.json_response(found.describe())

    async def _get_file_content(self, request: web.Request, body: Any) -> web.StreamResponse:
        found = self._find(request, self._files, "file_id")
        if isinstance(found, web.StreamResponse):
            return found
        if isinstance(scripted := self._scripted_api("files.content"), Fault):
            return _fault_response(scripted)
        if scripted is not None:
            return self._answer_api(request, scripted, None)
        return web.Response(body=found.data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request, body: Any) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        if not isinstance(body, dict) or body.get("input_file_id") not in self._files:
            return _fault_response(Fault.bad_request("input_file_id names no uploaded file", param="input_file_id"))
        if body.get("endpoint") != "/v1/chat/completions":
            return _fault_response(Fault.bad_request("the mock server batches /v1/chat/completions only",
                                                     param="endpoint"))
        if body.get("completion_window") != "24h":
            return _fault_response(Fault.bad_request("completion_window must be 24h", param="completion_window"))
        if isinstance(scripted := self._scripted_api("batches.create"), Fault):
            return _fault_response(scripted)
        batch = _MockBatch(
            id=f"batch_mock_{next(self._ids)}", input_file_id=body["input_file_id"], endpoint=body["endpoint"],
            metadata=body.get("metadata"), created_at=int(time.time()),
            complete_after_polls=self.batch_complete_after_polls, expire_after_lines=self.batch_expire_after_lines,
        )
        self._batches[batch.id] = batch
        return self._answer_api(request, scripted, batch.describe())

    async def _list_batches(self, request: web.Request, body: Any) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        return web.json_response(_list_page([b.describe() for b in self._batches.values()], request,
                                            default_limit=20))

    @property
    def batches_created(self) -> int:
        """Batches created since start or `reset()`: each one a provider would bill."""
        return len(self._batches)

    async def _retrieve_batch(self, request: web.Request, body: Any) -> web.StreamResponse:
        found = self._find(request, self._batches, "batch_id")
        if isinstance(found, web.StreamResponse):
            return found
        if isinstance(scripted := self._scripted_api("batches.retrieve"), Fault):
            return _fault_response(scripted)
        self._advance_batch(found)
        return self._answer_api(request, scripted, found.describe())

    async def _cancel_batch(self, request: web.Request, body: Any) -> web.StreamResponse:
        found = self._find(request, self._batches, "batch_id")
        if isinstance(found, web.StreamResponse):
            return found
        if found.status not in _BATCH_FINAL:
            found.status = "cancelling"
            found.times["cancelling_at"] = int(time.time())
        return web.json_response(found.describe())

    def _advance_batch(self, batch: _MockBatch) -> None:
        """One poll's worth of a batch's life: in_progress until its poll count is reached, then run."""
        now = int(time.time())
        if batch.status in _BATCH_FINAL:
            return
        if batch.status == "cancelling":  # cancelled before it ran: no results at all
            batch.status = "cancelled"
            batch.times["cancelled_at"] = now
            return
        batch.polls += 1
        batch.times.setdefault("in_progress_at", now)
        if batch.polls < batch.complete_after_polls:
            batch.status = "in_progress"
            return
        self._run_batch(batch)

    def _run_batch(self, batch: _MockBatch) -> None:
        now = int(time.time())
        requests, problems = _read_batch_lines(self._files[batch.input_file_id].data, batch.endpoint)
        if problems:
            batch.status, batch.errors = "failed", problems
            batch.times["failed_at"] = now
            return
        output: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        for index, (custom_id, request_body) in enumerate(requests):
            line: dict[str, Any] = {"id": f"batch_req_mock_{next(self._ids)}", "custom_id": custom_id,
                                    "response": None, "error": None}
            if batch.expire_after_lines is not None and index >= batch.expire_after_lines:
                line["error"] = {"code": "batch_expired", "message": _EXPIRED_MESSAGE}
                errors.append(line)
                continue
            status, payload = self._answer_batch_line(request_body)
            line["response"] = {"status_code": status, "request_id": f"req_mock_{next(self._ids)}", "body": payload}
            (output if status == 200 else errors).append(line)
        if output:
            batch.output_file_id = self._store_file(f"{batch.id}_output.jsonl", "batch_output", _jsonl(output)).id
        if errors:
            batch.error_file_id = self._store_file(f"{batch.id}_error.jsonl", "batch_output", _jsonl(errors)).id
        batch.counts = {"total": len(requests), "completed": len(output), "failed": len(errors)}
        expired = batch.expire_after_lines is not None and len(requests) > batch.expire_after_lines
        batch.status = "expired" if expired else "completed"
        batch.times["finalizing_at"] = now
        batch.times["expired_at" if expired else "completed_at"] = now

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


def _multipart_fields(content_type: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """A multipart/form-data body's fields by name: (filename, bytes). aiohttp's own reader cannot be used
    here because the request body was already read for recording."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
    if not message.is_multipart():
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str):
            fields[name] = (part.get_filename(), payload if isinstance(payload, bytes) else b"")
    return fields


def _read_batch_lines(data: bytes, endpoint: str) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
    """A batch input file's (custom_id, body) pairs, or the validation errors that fail the whole batch."""
    requests: list[tuple[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, text in enumerate(data.decode("utf-8", errors="replace").splitlines(), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.append({"code": "invalid_json_line", "line": number, "message": str(exc), "param": None})
            continue
        ok = (isinstance(line, dict) and isinstance(line.get("custom_id"), str) and line.get("method") == "POST"
              and line.get("url") == endpoint and isinstance(line.get("body"), dict))
        if not ok or line["custom_id"] in seen:
            message = f"needs a unique custom_id, method POST, url {endpoint} and a body object"
            problems.append({"code": "invalid_request", "line": number, "message": message, "param": None})
            continue
        seen.add(line["custom_id"])
        requests.append((line["custom_id"], line["body"]))
    return requests, problems


def _list_page(items: list[dict[str, Any]], request: web.Request, *, default_limit: int) -> dict[str, Any]:
    """One page of a list endpoint as OpenAI pages them: newest first, `limit` items after the id `after`."""
    newest_first = items[::-1]  # created in this order; created_at alone ties within a second
    after = request.query.get("after")
    if after is not None:
        ids = [item["id"] for item in newest_first]
        newest_first = newest_first[ids.index(after) + 1:] if after in ids else []
    limit = int(request.query.get("limit", default_limit))
    page = newest_first[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(newest_first) > limit}


def _jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines).encode("utf-8")


async def _read_json(request: web.Request) -> Any:
    if not request.body_exists:
        return None
    with contextlib.suppress(ValueError):
        return json.loads(await request.read())
    return None


def _fault_response(fault: Fault) -> web.Response:
    if isinstance(fault.body, str):
        return web.Response(status=fault.status, text=fault.body, headers=fault.headers)
    return web.json_response(fault.body, status=fault.status, headers=fault.headers)


def _message_text(message: Any) -> str:
    """The text of one chat message, whether its content is a string or a list of parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def _prompt_tokens(body: Any) -> int:
    """The prompt tokens a chat body's `usage` will report (0 for a body that is not a chat)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return 0
    return _estimate_tokens(sum(len(_message_text(message)) for message in messages))


def _reasoning_padding(chars: int) -> str:
    return (_PADDING * (chars // len(_PADDING) + 1))[:chars]


def _estimate_tokens(chars: int) -> int:
    """Two characters a token: close enough for mixed Chinese and ASCII, and stated in the docs."""
    return (chars + 1) // 2
