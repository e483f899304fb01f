"""A provider's Batch API for the run folder's request files: submitting them, polling them, collecting results.

OpenAI's Batch API (and providers that copy it) runs a JSONL file of chat requests within 24 hours
at a discount; vLLM's `run_batch` runs the same file offline (`collect_local`).

Each step records what it did in the run store (tables `batches`, `batch_requests`) as it goes, so
every step can be rerun, or continued from another process, given only the run folder. Calls to the
files and batches API are not retried here (one retry layer, and it is for chat calls): a failed
call raises, and running the same step again resumes it. The request files are written by
`batch.files`; result lines become grades in `batch.ingest`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.batch.files import BATCH_ENDPOINT
from pipeline.batch.ingest import BatchProblem, CollectResult, Ingest, utc
from pipeline.errors import FatalLLMError, LLMError, TransientLLMError
from pipeline.llm.client import Endpoint
from pipeline.llm.status_errors import error_for_status
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

if TYPE_CHECKING:
    import openai

log = logging.getLogger("kefu.batch")

FINAL_STATUSES = frozenset({"completed", "expired", "failed", "cancelled"})
"""Batch statuses after which nothing more will run: the batch can be collected."""

_MISSING = {
    "completed": "the provider returned no result for this request although the batch completed",
    "expired": "the batch expired (24 h window) before this request ran",
    "cancelled": "the batch was cancelled before this request ran",
    "failed": "the batch failed before any request ran",
}


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


def batch_client(endpoint: Endpoint) -> openai.OpenAI:
    """A synchronous client for the files and batches API: a handful of calls, no concurrency needed."""
    import openai  # deferred like pipeline.llm.client: the SDK takes a second to import

    return openai.OpenAI(base_url=endpoint.base_url, api_key=endpoint.api_key or "not-needed",
                         timeout=endpoint.timeout, max_retries=0)


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
    return int(utc(started_at).timestamp()) - _CLOCK_SLACK_S


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
        ingest = Ingest(store, rubric, result)
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
        ingest = Ingest(store, rubric, result)
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


def _now() -> str:
    return datetime.now(UTC).isoformat()
