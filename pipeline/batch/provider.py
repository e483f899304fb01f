"""Grading through a Batch API: request files, submission, polling, and collection into the run store.

OpenAI's Batch API (and providers that copy it) runs a JSONL file of chat requests within 24 hours
at a discount; vLLM's `run_batch` runs the same file offline. Every line's body is built by the code
that builds an online call (`llm.chat_request_body`), its custom_id is the grade's resume key, and a
collected line becomes a Grade exactly as online grading stores it (`grader.grade_from_reply`). So
`kefu grade` on the same run folder skips whatever a batch graded, and `--retry-failed` regrades
what a batch left unscored, online and under the same keys.

Each step records what it did in the run store (tables `batches`, `batch_requests`) as it goes, so
every step can be rerun, or continued from another process, given only the run folder. Calls to the
files and batches API are not retried here (one retry layer, and it is for chat calls): a failed
call raises, and running the same step again resumes it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.batch.limits import MAX_BYTES, MAX_REQUESTS
from pipeline.checks.checker import ServiceChecker
from pipeline.errors import ConfigError, FatalLLMError, LLMError, TransientLLMError
from pipeline.grading.grader import grade_from_reply, grade_scopes, response_format_for
from pipeline.grading.prompting import PromptSet, transcript_hash
from pipeline.grading.redaction import RedactionConfig, redact_transcript
from pipeline.grading.schema import build_grade_schema
from pipeline.inputs.rejects import write_rejects
from pipeline.llm.client import ChatResult, Endpoint, chat_request_body, parse_chat_completion
from pipeline.llm.status_errors import error_for_status
from pipeline.models.grade import Grade, Sampling
from pipeline.models.transcript import Reject, Transcript
from pipeline.rubric.model import Criterion, Rubric
from pipeline.store.rows import BatchRequest, grade_key
from pipeline.store.store import Store

if TYPE_CHECKING:
    import openai

log = logging.getLogger("kefu.batch")

BATCH_ENDPOINT: Final = "/v1/chat/completions"
FINAL_STATUSES = frozenset({"completed", "expired", "failed", "cancelled"})
"""Batch statuses after which nothing more will run: the batch can be collected."""
BATCH_DIR = "batch"
"""Where in the run folder the request files and downloaded results go."""

BatchMode = Literal["json_schema", "json_object"]

_MISSING = {
    "completed": "the provider returned no result for this request although the batch completed",
    "expired": "the batch expired (24 h window) before this request ran",
    "cancelled": "the batch was cancelled before this request ran",
    "failed": "the batch failed before any request ran",
}
class BatchWriteResult(BaseModel):
    """What `write_batch_files` wrote."""

    model_config = ConfigDict(extra="forbid")

    files: list[Path] = Field(default_factory=list, description="The request files written, in order.")
    requests: int = Field(default=0, description="Request lines written.")
    skipped: int = Field(default=0, description="Requests not written: graded already, or in an earlier file.")
    transcripts: int = Field(default=0, description="Transcripts read.")
    rejected: int = Field(default=0, description="Inputs rejected (see rejects.jsonl).")
    redacted: bool = Field(default=False, description="Whether personal data was replaced before writing.")
    redactions: dict[str, int] = Field(
        default_factory=dict, description="Personal data replaced per kind (PiiKind value), in the files written."
    )


class BatchStatus(BaseModel):
    """One request file and where it stands."""

    model_config = ConfigDict(extra="forbid")

    local_file: str = Field(description="The request file, relative to the run folder.")
    batch_id: str | None = Field(description="The provider's batch id; None until submitted.")
    status: str = Field(description="'written' until submitted, then the provider's batch status.")
    requests: int = Field(description="Requests in the file.")
    completed: int | None = Field(description="Requests the provider reports completed.")
    failed: int | None = Field(description="Requests the provider reports failed.")
    collected: bool = Field(description="True once every result is in the store.")
    problem: str | None = Field(default=None, description="Why the batch could not be checked or collected.")


class BatchProblem(BaseModel):
    """A batch that a collect could not check or download; the other batches are collected regardless."""

    model_config = ConfigDict(extra="forbid")

    local_file: str = Field(description="The request file, relative to the run folder.")
    batch_id: str | None = Field(description="The provider's batch id.")
    reason: str = Field(description="What went wrong, as the provider said it.")
    next_step: Literal["collect again", "fix the endpoint", "settled"] = Field(description=(
        "collect again: it may succeed later (429, 5xx, network); fix the endpoint: not before --base-url or the "
        "key is right; settled: the result file is gone and its requests are stored unscored, for --retry-failed"))


class CollectResult(BaseModel):
    """What one collect call stored."""

    model_config = ConfigDict(extra="forbid")

    scored: int = Field(default=0, description="Grades stored as scored.")
    unscored: int = Field(default=0, description="Grades stored as unscored, each with its reason.")
    already_collected: int = Field(default=0, description="Result lines skipped because their grade is stored.")
    unknown: int = Field(default=0, description="Result lines whose custom_id no request file of this folder has.")
    unreadable: int = Field(default=0, description="Result lines that are not JSON with a custom_id.")
    waiting: list[str] = Field(default_factory=list, description="Submitted files whose batch is still running.")
    superseded: int = Field(default=0, description="Results not stored because the key's stored grade is scored, "
                                                   "or newer than the request.")
    problems: list[BatchProblem] = Field(default_factory=list, description="Batches that could not be collected.")
    models: list[str] = Field(default_factory=list, description="Models of the grades stored, for pricing them.")
    prompt_tokens: int = Field(default=0, description="Prompt tokens of the grades stored.")
    cached_tokens: int = Field(default=0, description="Cached prompt tokens of the grades stored.")
    completion_tokens: int = Field(default=0, description="Completion tokens of the grades stored.")


def batch_client(endpoint: Endpoint) -> openai.OpenAI:
    """A synchronous client for the files and batches API: a handful of calls, no concurrency needed."""
    import openai  # deferred like pipeline.llm.client: the SDK takes a second to import

    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                         timeout=endpoint.timeout, max_retries=0)


# --- writing ---------------------------------------------------------------------------------------


class _FileWriter:
    """Writes request lines into numbered files, starting a new file before a limit would be crossed."""

    def __init__(self, store: Store, out_dir: Path, record: Callable[[str, int, list[Any], dict[str, str]], None],
                 max_requests: int, max_bytes: int) -> None:
        self._dir = out_dir / BATCH_DIR
        self._out_dir = out_dir
        self._record = record
        self._max_requests = max_requests
        self._max_bytes = max_bytes
        self._number = len(store.batch_files())
        self._handle: IO[bytes] | None = None
        self._path = out_dir
        self._size = 0
        self._requests: list[Any] = []
        self._transcripts: dict[str, str] = {}
        self.files: list[Path] = []

    def fits(self, line: bytes) -> bool:
        """False if the line alone is over the byte limit: no file can take it."""
        return len(line) <= self._max_bytes

    def add(self, line: bytes, request: BatchRequest, transcript_json: str) -> None:
        if self._handle is not None and (len(self._requests) >= self._max_requests
                                         or self._size + len(line) > self._max_bytes):
            self.finish()
        if self._handle is None:
            self._number += 1
            self._dir.mkdir(parents=True, exist_ok=True)
            self._path = self._dir / f"requests-{self._number:04d}.jsonl"
            self._handle = self._part(self._path).open("wb")
        self._handle.write(line)
        self._size += len(line)
        self._requests.append(request)
        self._transcripts[request.transcript_hash] = transcript_json

    def finish(self) -> None:
        """Close the current file and record it; a file on disk but not in the store is overwritten next time."""
        if self._handle is None:
            return
        self._handle.close()
        self._handle = None
        os.replace(self._part(self._path), self._path)
        self._record(self._path.relative_to(self._out_dir).as_posix(), self._size, self._requests, self._transcripts)
        self.files.append(self._path)
        self._size, self._requests, self._transcripts = 0, [], {}

    def abandon(self) -> None:
        """Drop the unfinished file (after an error or Ctrl-C): its requests are written again next time."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self._part(self._path).unlink(missing_ok=True)

    @staticmethod
    def _part(path: Path) -> Path:
        return path.with_name(path.name + ".part")


def write_batch_files(
    items: Iterable[Transcript | Reject],
    *,
    rubric: Rubric,
    prompts: PromptSet,
    model: str,
    sampling: Sampling,
    store: Store,
    out_dir: Path,
    per_criterion: bool = False,
    repeats: int = 1,
    response_mode: BatchMode = "json_schema",
    retry_failed: bool = False,
    key_options: dict[str, object] | None = None,
    redaction: RedactionConfig | None = None,
    checker: ServiceChecker | None = None,
    settings_record: dict[str, object] | None = None,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
) -> BatchWriteResult:
    """Write the requests of every grade not yet done into batch files under OUT/batch/, and record them.

    A key is skipped when the store has its grade (only a scored one with `retry_failed`) or an
    earlier file already holds it uncollected. Files are split before `max_requests` lines or
    `max_bytes` bytes. Rejects go to OUT/rejects.jsonl, as in online grading; so does a single
    request too large for any file. `redaction`, `checker` and `key_options` work as in
    `runner.run_grading`, so a transcript gets the same resume keys either way.
    """
    if max_requests < 1 or max_bytes < 1:
        raise ConfigError(f"batch file limits must be positive (max_requests={max_requests}, max_bytes={max_bytes})")
    if redaction is not None:
        key_options = {**(key_options or {}), "redact": True}
    run_id = store.start_run(
        rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
        template_hash=prompts.template_hash, model=model,
        settings={**(settings_record or {}), "batch": True, "per_criterion": per_criterion, "repeats": repeats,
                  "response_mode": response_mode, "sampling": sampling.model_dump(mode="json"),
                  "key_options": key_options or {}, "rubric": rubric.model_dump(mode="json", by_alias=True)},
    )

    def record(local_file: str, size: int, requests: list[Any], transcripts: dict[str, str]) -> None:
        store.record_batch_file(local_file=local_file, run_id=run_id, rubric_hash=rubric.content_hash, model=model,
                                response_mode=response_mode, size_bytes=size, requests=requests,
                                transcripts=transcripts)

    result = BatchWriteResult(redacted=redaction is not None)
    done = store.finished_keys(include_unscored=not retry_failed, pending_batches=True)
    sent: set[str] = set()  # keys written by this call: the same transcript twice in the input is one request
    scopes = grade_scopes(rubric, per_criterion)
    formats = {scope: response_format_for(build_grade_schema(crits), response_mode) for scope, crits in scopes}
    rejects_path = out_dir / "rejects.jsonl"
    rejects_path.write_text("", encoding="utf-8")
    writer = _FileWriter(store, out_dir, record, max_requests, max_bytes)
    try:
        for item in items:
            if isinstance(item, Reject):
                result.rejected += write_rejects([item], rejects_path)
                continue
            result.transcripts += 1
            redacted = redact_transcript(item, redaction) if redaction is not None else None
            transcript = redacted.transcript if redacted is not None else item
            thash = transcript_hash(transcript)
            store.save_transcript(item, thash, checker.check(item).record() if checker is not None else None)
            as_json = transcript.model_dump_json()
            written = result.requests
            for scope, crits in scopes:
                messages: list[dict[str, str]] | None = None
                for repeat in range(repeats):
                    key = grade_key(transcript_hash=thash, rubric_hash=rubric.content_hash,
                                    template_hash=prompts.template_hash, model=model, sampling=sampling,
                                    repeat=repeat, scope=scope, options=key_options)
                    if key in done or key in sent:
                        result.skipped += 1
                        continue
                    sent.add(key)
                    messages = messages or prompts.messages(rubric, crits, transcript)
                    body = chat_request_body(messages, model=model, response_format=formats[scope],
                                             temperature=sampling.temperature, seed=sampling.seed,
                                             max_tokens=sampling.max_tokens)
                    custom_id = _custom_id(key, store.batch_writes(key))
                    line = _encode_line(custom_id, body)
                    if not writer.fits(line):
                        result.rejected += write_rejects([_too_big(item, len(line), max_bytes)], rejects_path)
                        break
                    writer.add(line, BatchRequest(custom_id, transcript.id, thash, repeat, scope, key), as_json)
                    result.requests += 1
            if redacted is not None and result.requests > written:
                for kind, n in redacted.counts.items():
                    if n:
                        result.redactions[kind.value] = result.redactions.get(kind.value, 0) + n
        writer.finish()
    except BaseException:
        writer.abandon()
        raise
    result.files = writer.files
    return result


def _custom_id(key: str, earlier_writes: int) -> str:
    """The key for a key's first request; `key-2`, `key-3`… when it is written again (--retry-failed), so that
    a result line of an older file is never taken for the newer request's."""
    return key if earlier_writes == 0 else f"{key}-{earlier_writes + 1}"


def _encode_line(custom_id: str, body: dict[str, Any]) -> bytes:
    line = {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}
    return (json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def _too_big(item: Transcript, size: int, max_bytes: int) -> Reject:
    file, _, line = (item.source or "").rpartition(":")
    return Reject(file=file or (item.source or ""), line=int(line) if line.isdigit() else None,
                  transcript_id=item.id, field="turns",
                  reason=f"one request for this chat is {size:,} bytes, over the batch file limit of {max_bytes:,} "
                         f"bytes; grade it online with kefu grade (nothing was truncated)")


# --- the provider ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _provider(doing: str) -> Iterator[None]:
    """SDK errors as ours, saying what was being done; a rerun of the same step resumes it."""
    import openai

    try:
        yield
    except openai.APIStatusError as exc:
        status = exc.status_code
        raise error_for_status(status, f"{doing}: HTTP {status}: {exc.message}", batch=True) from None
    except openai.APIConnectionError as exc:
        raise TransientLLMError(f"{doing}: cannot reach the endpoint ({exc}); run the same command again") from None


def submit(out_dir: Path, client: openai.OpenAI) -> list[BatchStatus]:
    """Upload every request file not yet submitted (purpose 'batch') and create its batch; records the ids.

    Each call's intent is recorded before it is made. When an earlier run's upload or create got no
    answer (a dropped connection, a kill), the provider may have done it anyway: the file is looked
    for by its upload name, and the batch by its input file, before anything is sent again, so a
    rerun never starts (and pays for) a second batch of the same file.
    """
    with Store.open(out_dir) as store:
        for row in store.batch_files():
            if row["batch_id"] is not None or row["collected_at"] is not None:
                continue
            local = row["local_file"]
            name = f"{_folder_id(store)}-{Path(local).name}"
            file_id = row["input_file_id"]
            if file_id is None and row["upload_started_at"] is not None:
                file_id = _find_upload(client, name, row["bytes"], row["upload_started_at"])
            if file_id is None:
                store.update_batch(local, upload_started_at=_now())
                with (out_dir / local).open("rb") as fh, _provider(f"uploading {local}"):
                    file_id = client.files.create(file=(name, fh), purpose="batch").id
            store.update_batch(local, input_file_id=file_id)
            created = None
            if row["create_started_at"] is not None or row["input_file_id"] is not None:
                # A folder written before intents were recorded has only the upload's time to go by.
                created = _find_batch(client, file_id, row["create_started_at"] or row["updated_at"])
            if created is None:
                store.update_batch(local, create_started_at=_now())
                with _provider(f"creating the batch for {local}"):
                    created = client.batches.create(input_file_id=file_id, endpoint=BATCH_ENDPOINT,
                                                    completion_window="24h", metadata={"kefu_file": local})
            store.update_batch(local, batch_id=created.id, status=created.status)
            log.info("submitted %s as batch %s", local, created.id)
        return [_status_of(row) for row in store.batch_files()]


_CLOCK_SLACK_S = 600
"""How far the provider's clock may be behind ours when an earlier call is looked for by its time."""


def _folder_id(store: Store) -> str:
    """A random id of this run folder, in upload names, so that a lost upload is found as ours and no other's."""
    folder = store.meta_value("batch_folder_id")
    if folder is None:
        folder = uuid.uuid4().hex[:12]
        store.set_meta_value("batch_folder_id", folder)
    return folder


def _since(started_at: str) -> int:
    return int(_utc(started_at).timestamp()) - _CLOCK_SLACK_S


def _utc(stamp: str) -> datetime:
    """A stored ISO time; one without a zone is UTC, as everything the store writes is."""
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _find_upload(client: openai.OpenAI, name: str, size: int, started_at: str) -> str | None:
    """The id of a file an earlier, unanswered upload left at the provider, if it is there (newest first)."""
    with _provider(f"looking for an earlier upload of {name}"):
        for file in client.files.list(purpose="batch"):
            if file.created_at < _since(started_at):
                break
            if file.filename == name and file.bytes == size:
                log.info("found the earlier upload of %s: %s", name, file.id)
                return file.id
    return None


def _find_batch(client: openai.OpenAI, file_id: str, started_at: str) -> openai.types.Batch | None:
    """A batch an earlier, unanswered create started for this input file, if there is one (newest first)."""
    with _provider(f"looking for an earlier batch of {file_id}"):
        for batch in client.batches.list(limit=100):
            if batch.created_at < _since(started_at):
                break
            if batch.input_file_id == file_id:
                log.info("found the batch an earlier run created for %s: %s", file_id, batch.id)
                return batch
    return None


def status(out_dir: Path, client: openai.OpenAI) -> list[BatchStatus]:
    """Ask the provider about every submitted batch that has not finished, record it, and list every file."""
    with Store.open(out_dir) as store:
        _refresh(store, client)
        return [_status_of(row) for row in store.batch_files()]


def _refresh(store: Store, client: openai.OpenAI) -> list[BatchProblem]:
    """Ask for every unfinished batch's status; a batch that cannot be checked is a problem of its own."""
    problems = []
    for row in store.batch_files():
        if row["batch_id"] is None or row["collected_at"] is not None or row["status"] in FINAL_STATUSES:
            continue
        try:
            with _provider(f"checking batch {row['batch_id']}"):
                batch = client.batches.retrieve(row["batch_id"])
        except LLMError as exc:
            _raise_if_account_wide(exc)
            problems.append(_problem(store, row, exc))
            continue
        counts = batch.request_counts
        errors = [f"{e.code or 'error'}: {e.message or ''}" + (f" (line {e.line})" if e.line else "")
                  for e in ((batch.errors.data if batch.errors else None) or [])]
        store.update_batch(row["local_file"], status=batch.status, output_file_id=batch.output_file_id,
                           error_file_id=batch.error_file_id, completed=counts.completed if counts else None,
                           failed=counts.failed if counts else None, errors="; ".join(errors) or None,
                           collect_error=None)
    return problems


def _raise_if_account_wide(exc: LLMError) -> None:
    """A refused key stops everything (every batch would fail the same way); anything else is one batch's."""
    if isinstance(exc, FatalLLMError) and exc.status in (401, 403):
        raise exc


def _problem(store: Store, row: dict[str, Any], trouble: LLMError | str) -> BatchProblem:
    """Record why a batch was not collected: an error of the provider's, or (a string) why it was settled."""
    if isinstance(trouble, str):
        reason, step = trouble, "settled"
    else:
        reason, step = str(trouble), "collect again" if isinstance(trouble, TransientLLMError) else "fix the endpoint"
    store.update_batch(row["local_file"], collect_error=reason)
    return BatchProblem(local_file=row["local_file"], batch_id=row["batch_id"], reason=reason, next_step=step)


def _status_of(row: dict[str, Any]) -> BatchStatus:
    return BatchStatus(local_file=row["local_file"], batch_id=row["batch_id"], status=row["status"],
                       requests=row["requests"], completed=row["completed"], failed=row["failed"],
                       collected=row["collected_at"] is not None, problem=row["collect_error"])


# --- collecting ------------------------------------------------------------------------------------


def collect(out_dir: Path, client: openai.OpenAI, rubric: Rubric | None = None) -> CollectResult:
    """Store the results of every finished batch of the run folder; safe to repeat and to interrupt.

    Output and error files are downloaded next to the request file (kept, for audit). A line that
    failed, expired or did not validate becomes an unscored grade with its reason, never a 0; so
    does a request the provider returned nothing for. `rubric` defaults to the one the files were
    written with (recorded in the store); a different rubric is refused.

    One batch's trouble does not hold up the others: a batch that cannot be checked or downloaded
    now (a 5xx, a dropped connection) stays pending and is listed in `problems`; a result file the
    provider no longer has (404, 410) is listed too, and the requests it answered are stored
    unscored with that reason, so that `--retry-failed` can send them again. Only a refused key
    (401, 403) stops the collect.
    """
    result = CollectResult()
    with Store.open(out_dir) as store:
        result.problems += _refresh(store, client)
        ingest = _Ingest(store, rubric, result)
        for row in store.batch_files():
            if row["batch_id"] is None or row["collected_at"] is not None:
                continue
            local = row["local_file"]
            if row["status"] not in FINAL_STATUSES:
                if not any(p.local_file == local for p in result.problems):
                    result.waiting.append(local)
                continue
            reason = _MISSING[row["status"]] + (f": {row['errors']}" if row["errors"] else "")
            try:
                downloaded, gone = _download_results(client, row, out_dir / local)
            except LLMError as exc:
                _raise_if_account_wide(exc)
                result.problems.append(_problem(store, row, exc))
                continue
            for path in downloaded:
                ingest.lines(path)
            if gone:
                reason = (f"the batch ran, but its {' and '.join(gone)} file could not be downloaded (the provider no "
                          "longer has it), so this request's result is lost")
                result.problems.append(_problem(store, row, reason))
            ingest.missing(local, reason)
            store.update_batch(local, collected_at=_now(), **({} if gone else {"collect_error": None}))
        ingest.finish_runs()
    return result


def _download_results(client: openai.OpenAI, row: dict[str, Any], request_file: Path) -> tuple[list[Path], list[str]]:
    """A finished batch's output and error files, downloaded; and the kinds the provider no longer has (404, 410)."""
    downloaded, gone = [], []
    for kind, file_id in (("output", row["output_file_id"]), ("errors", row["error_file_id"])):
        if not file_id:
            continue
        try:
            downloaded.append(_download(client, file_id, request_file, kind))
        except FatalLLMError as exc:
            if exc.status not in (404, 410):
                raise
            log.warning("%s: %s", row["local_file"], exc)
            gone.append(kind)
    return downloaded, gone


def collect_local(out_dir: Path, output_jsonl: Path, rubric: Rubric | None = None) -> CollectResult:
    """Store the results of an offline run (vLLM `run_batch -i OUT/batch/requests-NNNN.jsonl -o output_jsonl`).

    Lines are matched to requests by custom_id, from whichever request file of the folder; a request
    with no line stays pending (run vLLM again and collect again). A request file is marked collected
    once every one of its requests is.
    """
    result = CollectResult()
    with Store.open(out_dir) as store:
        ingest = _Ingest(store, rubric, result)
        ingest.lines(output_jsonl)
        for row in store.batch_files():
            if row["collected_at"] is None and not store.uncollected_requests(row["local_file"]):
                store.update_batch(row["local_file"], collected_at=_now())
        ingest.finish_runs()
    return result


def _download(client: openai.OpenAI, file_id: str, request_file: Path, kind: str) -> Path:
    """The provider's file saved beside the request file; a file downloaded before is not fetched again."""
    dest = request_file.with_name(f"{request_file.stem}.{kind}.jsonl")
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    with _provider(f"downloading {kind} file {file_id}"), client.files.with_streaming_response.content(
        file_id
    ) as response:
        response.stream_to_file(part)
    os.replace(part, dest)
    return dest


class _Ingest:
    """Turns result lines into grades in the store, each committed with its request's 'collected' mark."""

    def __init__(self, store: Store, rubric: Rubric | None, result: CollectResult) -> None:
        self._store = store
        self._given = rubric
        self._result = result
        self._batches = {row["local_file"]: row for row in store.batch_files()}
        self._criteria: dict[str, dict[str, list[Criterion]]] = {}  # rubric hash -> scope -> criteria
        self._transcripts: dict[str, Transcript] = {}
        self._runs: set[int] = set()

    def lines(self, path: Path) -> None:
        """Ingest every line of a batch output or error file (OpenAI's or vLLM's format)."""
        with path.open(encoding="utf-8") as fh:
            for number, text in enumerate(fh, start=1):
                if text.strip():
                    self._line(text, f"{path}:{number}")

    def missing(self, local_file: str, reason: str) -> None:
        """Every request of a finished batch that no line answered: unscored with `reason`."""
        for request in self._store.uncollected_requests(local_file):
            self._save(request, None, reason, attempts=0)

    def finish_runs(self) -> None:
        """Close the runs whose every request file is now collected, with their totals."""
        rows = self._store.batch_files()
        for run_id in self._runs:
            if all(r["collected_at"] is not None for r in rows if r["run_id"] == run_id):
                self._store.finish_run(run_id, {"batch": True, **self._store.batch_run_totals(run_id)})

    def _line(self, text: str, where: str) -> None:
        try:
            line = json.loads(text)
            custom_id = line["custom_id"]
        except (ValueError, KeyError, TypeError):
            log.warning("%s: not a batch result line; skipped", where)
            self._result.unreadable += 1
            return
        request = self._store.batch_request(str(custom_id))
        if request is None:
            log.warning("%s: custom_id %s is in no request file of this run folder; skipped", where, custom_id)
            self._result.unknown += 1
            return
        if request["collected_at"] is not None:
            self._result.already_collected += 1
            return
        reply, failure, attempts = _outcome(line)
        self._save(request, reply, failure, attempts)

    def _save(self, request: dict[str, Any], reply: ChatResult | None, failure: str | None, attempts: int) -> None:
        batch = self._batches[request["local_file"]]
        criteria = self._scopes(batch)[request["scope"]]
        grade = grade_from_reply(
            self._transcript(request["transcript_hash"]), key=request["grade_key"], repeat=request["repeat"],
            scope=request["scope"], criteria=criteria, model=batch["model"], response_mode=batch["response_mode"],
            result=reply, failure=failure, attempts=attempts,
        )
        self._runs.add(batch["run_id"])
        if not _is_news(grade, self._store.grade_status(grade.key), batch["created_at"]):
            self._store.save_batch_grade(None, batch["run_id"], batch["rubric_hash"], custom_id=request["custom_id"])
            self._result.superseded += 1
            return
        self._store.save_batch_grade(grade, batch["run_id"], batch["rubric_hash"], custom_id=request["custom_id"])
        r = self._result
        if batch["model"] not in r.models:
            r.models.append(batch["model"])
        if grade.status == "scored":
            r.scored += 1
        else:
            r.unscored += 1
        r.prompt_tokens += grade.prompt_tokens
        r.cached_tokens += grade.cached_tokens or 0
        r.completion_tokens += grade.completion_tokens

    def _scopes(self, batch: dict[str, Any]) -> dict[str, list[Criterion]]:
        wanted = batch["rubric_hash"]
        if wanted not in self._criteria:
            rubric = self._given or _run_rubric(self._store, batch["run_id"])
            if rubric.content_hash != wanted:
                raise ConfigError(
                    f"{batch['local_file']} was written with another rubric (hash {wanted[:12]}…, this one is "
                    f"{rubric.content_hash[:12]}…): collect with the rubric the files were written with"
                )
            self._criteria[wanted] = dict(grade_scopes(rubric, True) + grade_scopes(rubric, False))
        return self._criteria[wanted]

    def _transcript(self, content_hash: str) -> Transcript:
        # Per-criterion lines of one transcript arrive together; a small cache saves re-parsing it.
        if content_hash not in self._transcripts:
            if len(self._transcripts) >= 256:
                self._transcripts.clear()
            text = self._store.batch_transcript(content_hash)
            if text is None:
                raise ConfigError(f"{self._store.path}: transcript {content_hash[:12]}… of a batch is not stored")
            self._transcripts[content_hash] = Transcript.model_validate_json(text)
        return self._transcripts[content_hash]


def _is_news(grade: Grade, stored: tuple[str, str] | None, written_at: str) -> bool:
    """Whether a batch's result may replace what the store holds under its key.

    Never over a scored grade (the store refuses that too), and a failure never over a grade stored
    after its request was written: that one is newer (an online grade made while the batch ran).
    """
    if stored is None:
        return True
    status, created_at = stored
    if status == "scored":
        return False
    return grade.status == "scored" or _utc(created_at) < _utc(written_at)


def batch_rubric(store: Store) -> Rubric:
    """The rubric the latest batch files of a run folder were written with, as the store recorded it."""
    files = store.batch_files()
    if not files:
        raise ConfigError(f"{store.path}: no batch files have been written in this run folder")
    return _run_rubric(store, files[-1]["run_id"])


def _run_rubric(store: Store, run_id: int) -> Rubric:
    run = store.run(run_id)
    if run is None:
        raise ConfigError(f"{store.path}: run {run_id} that wrote the batch files is not recorded")
    return Rubric.model_validate(json.loads(run["settings"])["rubric"], by_alias=True)


def _outcome(line: dict[str, Any]) -> tuple[ChatResult | None, str | None, int]:
    """A result line as (reply, failure reason, attempts): OpenAI output/error lines and vLLM lines alike."""
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    error = line.get("error")
    code = response.get("status_code") if response else None
    body = response.get("body") if response else None
    if code == 200 and isinstance(body, dict) and not error:
        try:
            return parse_chat_completion(json.dumps(body).encode("utf-8")), None, 1
        except LLMError as exc:
            return None, f"the batch returned a malformed completion: {exc}", 1
    reason = _error_text(error) or _error_text(body) or "no reason given"
    if code is None:
        return None, f"the batch request did not run: {reason}", 0
    return None, f"the batch request failed: HTTP {code}: {reason}", 1


def _error_text(value: Any) -> str | None:
    """The message in an error as providers write it: a string, {code, message}, or {"error": {...}}."""
    if isinstance(value, str):
        return value or None
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("error"), dict | str):
        return _error_text(value["error"])
    message, code = value.get("message"), value.get("code")
    if message and code:
        return f"{code}: {message}"
    return str(message or code) if (message or code) else None


def _now() -> str:
    return datetime.now(UTC).isoformat()
