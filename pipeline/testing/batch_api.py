"""The mock server's Files and Batches endpoints: uploaded files, batches and their life, and their handlers.

`POST /v1/files` (multipart upload), `GET /v1/files` (list, newest first), `GET /v1/files/{id}`,
`/v1/files/{id}/content` and `DELETE /v1/files/{id}`, `POST /v1/batches`, `GET /v1/batches` (list, newest
first), `GET /v1/batches/{id}` and `POST /v1/batches/{id}/cancel`. `MockServer.script_api()` queues faults
for these calls: a `Fault` is answered instead of the call, a `Drop` closes the connection after the call was
done (the provider did it, the client never hears: a lost response).
A batch runs when it is polled for the `batch_complete_after_polls`-th time: each line goes through
steps 3-6 of the server (pipeline/testing/mockserver.py: scripted items and `error_rate` included, no
latency), a 200 lands in the output file and anything else in the error file. With
`batch_expire_after_lines` set, only that many lines run and the batch ends "expired", the rest in the
error file as `batch_expired`, as OpenAI reports them. A file with an unreadable line fails validation as
a whole ("failed", nothing runs).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any, TypeAlias, TypeVar

from aiohttp import web

from pipeline.testing.script import ApiCall, Drop, Fault, fault_response, openai_error

Handler: TypeAlias = Callable[[web.Request, Any], Awaitable[web.StreamResponse]]
"""A route handler: the aiohttp request and its JSON body, already parsed (None if absent or not JSON)."""


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


class BatchApi:
    """One server's files and batches, and the handlers of their endpoints.

    Handlers run on the server's one event loop, so they share state without locks; the fault script, queued
    from a test's thread, is guarded by the server's lock. A batch line is answered by `answer_line`, the
    server's own steps 3-6; `settings` gives the server's (`batch_complete_after_polls`,
    `batch_expire_after_lines`) when a batch is created.
    """

    def __init__(
        self,
        *,
        ids: Iterator[int],
        lock: threading.Lock,
        check_key: Callable[[web.Request], web.StreamResponse | None],
        answer_line: Callable[[Any], tuple[int, Any]],
        settings: Callable[[], tuple[int, int | None]],
    ) -> None:
        self._ids = ids
        self._lock = lock
        self._check_key = check_key
        self._answer_batch_line = answer_line
        self._settings = settings
        self._files: dict[str, _StoredFile] = {}
        self._batches: dict[str, _MockBatch] = {}
        self._api_script: dict[str, deque[Fault | Drop]] = {}

    def routes(self) -> list[tuple[str, str, Handler]]:
        """(method, path, handler) of every files and batches endpoint."""
        return [
            ("POST", "/v1/files", self._upload_file),
            ("GET", "/v1/files", self._list_files),
            ("GET", "/v1/files/{file_id}", self._get_file),
            ("DELETE", "/v1/files/{file_id}", self._delete_file),
            ("GET", "/v1/files/{file_id}/content", self._get_file_content),
            ("POST", "/v1/batches", self._create_batch),
            ("GET", "/v1/batches", self._list_batches),
            ("GET", "/v1/batches/{batch_id}", self._retrieve_batch),
            ("POST", "/v1/batches/{batch_id}/cancel", self._cancel_batch),
        ]

    def script(self, call: ApiCall, *items: Fault | Drop) -> None:
        """Queue faults for the next calls of one kind."""
        with self._lock:
            self._api_script.setdefault(call, deque()).extend(items)

    def reset(self) -> None:
        """Forget every file, batch and queued fault; the caller holds the server's lock."""
        self._files.clear()
        self._batches.clear()
        self._api_script.clear()

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
            return fault_response(Fault(status=404, body=openai_error(message, "invalid_request_error", param=key)))
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
            return fault_response(scripted)
        parts = _multipart_fields(request.headers.get("Content-Type", ""), await request.read())
        if "file" not in parts or "purpose" not in parts:
            return fault_response(Fault.bad_request("a multipart body with 'file' and 'purpose' is required"))
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
            return fault_response(scripted)
        if scripted is not None:
            return self._answer_api(request, scripted, None)
        return web.Response(body=found.data, content_type="application/octet-stream")

    async def _create_batch(self, request: web.Request, body: Any) -> web.StreamResponse:
        if (denied := self._check_key(request)) is not None:
            return denied
        if not isinstance(body, dict) or body.get("input_file_id") not in self._files:
            return fault_response(Fault.bad_request("input_file_id names no uploaded file", param="input_file_id"))
        if body.get("endpoint") != "/v1/chat/completions":
            return fault_response(Fault.bad_request("the mock server batches /v1/chat/completions only",
                                                     param="endpoint"))
        if body.get("completion_window") != "24h":
            return fault_response(Fault.bad_request("completion_window must be 24h", param="completion_window"))
        if isinstance(scripted := self._scripted_api("batches.create"), Fault):
            return fault_response(scripted)
        complete_after_polls, expire_after_lines = self._settings()
        batch = _MockBatch(
            id=f"batch_mock_{next(self._ids)}", input_file_id=body["input_file_id"], endpoint=body["endpoint"],
            metadata=body.get("metadata"), created_at=int(time.time()),
            complete_after_polls=complete_after_polls, expire_after_lines=expire_after_lines,
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
            return fault_response(scripted)
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
