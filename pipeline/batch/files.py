"""Batch request files: every grade not yet done, written as request lines under OUT/batch/ and recorded.

Every line's body is built by the code that builds an online call (`llm.chat_request_body`) and its
custom_id is the grade's resume key, so `kefu grade` on the same run folder skips whatever a batch
graded. Files are split before the provider's limits (`batch.limits`); a file is recorded in the run
store (tables `batches`, `batch_requests`) only once it is complete.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.batch.limits import MAX_BYTES, MAX_REQUESTS
from pipeline.checks.checker import ServiceChecker
from pipeline.errors import ConfigError
from pipeline.grading.grader import grade_scopes, response_format_for
from pipeline.grading.plan import GradePlanner
from pipeline.grading.prompting import PromptSet, transcript_hash
from pipeline.grading.redaction import RedactionConfig
from pipeline.grading.schema import build_grade_schema
from pipeline.inputs.rejects import write_rejects
from pipeline.jsonlines import escape_separators
from pipeline.llm.client import chat_request_body
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Reject, Transcript
from pipeline.rubric.model import Rubric
from pipeline.store.rows import BatchRequest
from pipeline.store.store import Store

BATCH_ENDPOINT: Final = "/v1/chat/completions"
BATCH_DIR = "batch"
"""Where in the run folder the request files and downloaded results go."""

BatchMode = Literal["json_schema", "json_object"]


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
    request too large for any file. The keys are planned as online grading plans them
    (`grading.plan`), so a transcript gets the same resume keys either way.
    """
    if max_requests < 1 or max_bytes < 1:
        raise ConfigError(f"batch file limits must be positive (max_requests={max_requests}, max_bytes={max_bytes})")
    scopes = grade_scopes(rubric, per_criterion)
    planner = GradePlanner(rubric_hash=rubric.content_hash, template_hash=prompts.template_hash, model=model,
                           sampling=sampling, scopes=scopes, repeats=repeats, key_options=key_options,
                           redaction=redaction)
    run_id = store.start_run(
        rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
        template_hash=prompts.template_hash, model=model,
        settings={**(settings_record or {}), "batch": True, "per_criterion": per_criterion, "repeats": repeats,
                  "response_mode": response_mode, "sampling": sampling.model_dump(mode="json"),
                  "key_options": planner.key_options or {}, "rubric": rubric.model_dump(mode="json", by_alias=True)},
    )

    def record(local_file: str, size: int, requests: list[Any], transcripts: dict[str, str]) -> None:
        store.record_batch_file(local_file=local_file, run_id=run_id, rubric_hash=rubric.content_hash, model=model,
                                response_mode=response_mode, size_bytes=size, requests=requests,
                                transcripts=transcripts)

    result = BatchWriteResult(redacted=redaction is not None)
    done = store.finished_keys(include_unscored=not retry_failed, pending_batches=True)
    sent: set[str] = set()  # keys written by this call: the same transcript twice in the input is one request
    order = {scope: n for n, (scope, _) in enumerate(scopes)}
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
            plan = planner.plan(item)
            transcript, thash, redacted = plan.transcript, plan.content_hash, plan.redacted
            # As the online runner does: checks keyed by the original chat's hash, kept when still current, so
            # a later `kefu grade` in this folder does not check these chats again.
            checks = (checker.record_for(item, thash if transcript is item else transcript_hash(item),
                                         store.transcript_checks(item.id)) if checker is not None else None)
            store.save_transcript(item, thash, checks)
            as_json = transcript.model_dump_json()
            written = result.requests
            messages: dict[str, list[dict[str, str]]] = {}  # rendered once per scope, for all its repeats
            too_big: set[str] = set()  # scopes whose request fits no file: their later repeats are not tried
            for planned in sorted(plan.grades, key=lambda g: order[g.scope]):  # a scope's repeats in a row
                scope, key = planned.scope, planned.key
                if scope in too_big:
                    continue
                if key in done or key in sent:
                    result.skipped += 1
                    continue
                sent.add(key)
                if scope not in messages:
                    messages[scope] = prompts.messages(rubric, planned.criteria, transcript)
                body = chat_request_body(messages[scope], model=model, response_format=formats[scope],
                                         temperature=sampling.temperature, seed=sampling.seed,
                                         max_tokens=sampling.max_tokens)
                custom_id = _custom_id(key, store.batch_writes(key))
                line = _encode_line(custom_id, body)
                if not writer.fits(line):
                    result.rejected += write_rejects([_too_big(item, len(line), max_bytes)], rejects_path)
                    too_big.add(scope)
                    continue
                writer.add(line, BatchRequest(custom_id, transcript.id, thash, planned.repeat, scope, key), as_json)
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
    """One request line; a provider that splits lines at U+2028 and the like still reads it whole."""
    line = {"custom_id": custom_id, "method": "POST", "url": BATCH_ENDPOINT, "body": body}
    return (escape_separators(json.dumps(line, ensure_ascii=False, separators=(",", ":"))) + "\n").encode("utf-8")


def _too_big(item: Transcript, size: int, max_bytes: int) -> Reject:
    file, _, line = (item.source or "").rpartition(":")
    return Reject(file=file or (item.source or ""), line=int(line) if line.isdigit() else None,
                  transcript_id=item.id, field="turns",
                  reason=f"one request for this chat is {size:,} bytes, over the batch file limit of {max_bytes:,} "
                         f"bytes; grade it online with kefu grade (nothing was truncated)")
