"""Collecting batch results: each result line turned into a grade in the run store, tallied in a CollectResult.

A collected line becomes a Grade exactly as online grading stores it (`grader.grade_from_reply`),
under the request's resume key, so `--retry-failed` regrades what a batch left unscored, online and
under the same keys. A line that failed, expired or did not validate is an unscored grade with its
reason, never a 0.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.errors import ConfigError, LLMError
from pipeline.grading.grader import grade_from_reply, grade_scopes
from pipeline.llm.client import ChatResult, parse_chat_completion
from pipeline.models.grade import Grade, add_tokens
from pipeline.models.transcript import Transcript
from pipeline.rubric.model import Criterion, Rubric
from pipeline.store.store import Store

log = logging.getLogger("kefu.batch")


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


class Ingest:
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
        with path.open("rb") as fh:  # split at \n only, and a line that is not UTF-8 is one unreadable line
            for number, raw in enumerate(fh, start=1):
                if raw.strip():
                    self._line(raw, f"{path}:{number}")

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

    def _line(self, raw: bytes, where: str) -> None:
        try:
            line = json.loads(raw.decode("utf-8"))
            custom_id = line["custom_id"]
        except (ValueError, KeyError, TypeError, RecursionError):  # UnicodeDecodeError is a ValueError
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
        add_tokens(r, grade)

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
    return grade.status == "scored" or utc(created_at) < utc(written_at)


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


def utc(stamp: str) -> datetime:
    """A stored ISO time; one without a zone is UTC, as everything the store writes is."""
    moment = datetime.fromisoformat(stamp)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
