"""The store's row types (what its methods take and return, as columns) and the resume key of a grade."""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from pipeline.models.grade import Sampling
from pipeline.models.transcript import Transcript

Checks = dict[str, Any] | str | None
"""A transcript's checks record (pipeline/checks/checker.py), or its JSON text as `checks.record_json` writes it."""


class TranscriptMeta(NamedTuple):
    """What `Store.save_transcript` stores of a transcript: its metadata, content hash and checks."""

    transcript: Transcript
    content_hash: str
    checks: Checks


class FinishedLine(NamedTuple):
    """An input line whose grades are all stored, under one run fingerprint (see `pipeline.grading.resume`)."""

    fingerprint: str
    digest: bytes
    transcript_id: str


class BatchRequest(NamedTuple):
    """One request line of a batch file, as `Store.record_batch_file` records it."""

    custom_id: str
    transcript_id: str
    transcript_hash: str
    repeat: int
    scope: str
    key: str | None = None
    """The grade's resume key; None when it is the custom_id (a key's first request)."""


class GradeRow(NamedTuple):
    """A stored grade as its columns, unvalidated (`Store.iter_grade_rows`): exports read every grade, and
    validating each into a `Grade` cost them more than writing it."""

    key: str
    transcript_id: str
    repeat: int
    scope: str
    status: str
    model: str
    attempts: int
    prompt_tokens: int
    cached_tokens: int | None
    completion_tokens: int
    error: str | None
    response_mode: str
    latency_s: float
    created_at: str
    """`Grade.created_at.isoformat()`, as stored."""
    criteria: str
    """The JSON `CRITERION_GRADES` dumped: a list of `CriterionGrade` objects."""
    injection: str | None
    """The JSON `INJECTION_HITS` dumped, or None when the chat has none."""


class TranscriptRow(NamedTuple):
    """A transcript's stored metadata (`Store.iter_transcript_rows`), checks left as their JSON text."""

    id: str
    platform: str | None
    shop: str | None
    agent_id: str | None
    started_at: str | None
    n_turns: int
    source: str | None
    checks: str | None
    """`json.dumps(record, ensure_ascii=False)` of `TranscriptChecks.record()`, or None."""


class LabelRow(NamedTuple):
    """A reviewer's current score of one criterion of one chat (`Store.labels`)."""

    id: int
    transcript_id: str
    criterion_id: str
    score: int
    rater_id: str
    rubric_id: str
    rubric_version: str
    labelled_at: str
    """UTC, ISO 8601."""


class DisputeRow(NamedTuple):
    """A dispute (申诉) of one criterion's grade, open or resolved (`Store.disputes`)."""

    id: int
    transcript_id: str
    criterion_id: str
    reason: str
    opened_by: str
    opened_at: str
    status: str
    """'open' or 'resolved'."""
    final_score: int | None
    resolved_by: str | None
    resolved_at: str | None
    note: str | None


class AuditRow(NamedTuple):
    """One line of the append-only audit trail: who did what to which chat, when."""

    id: int
    at: str
    actor: str
    action: str
    transcript_id: str
    criterion_id: str | None
    detail: str
    """JSON of what was saved."""


def grade_key(
    *,
    transcript_hash: str,
    rubric_hash: str,
    template_hash: str,
    model: str,
    sampling: Sampling,
    repeat: int,
    scope: str,
    options: dict[str, Any] | None = None,
) -> str:
    """The resume key of one call — a contract: sha256 of the canonical JSON of exactly these inputs.

    Transcript content, rubric content, template content, model, sampling parameters, repeat index,
    scope ('all' or a criterion id) and options that change what is sent (e.g. redaction). Change any
    of them and the grade is new; the repeat index makes repeats independent samples, never cached.
    """
    payload = {
        "v": 1,
        "transcript": transcript_hash,
        "rubric": rubric_hash,
        "templates": template_hash,
        "model": model,
        "sampling": sampling.model_dump(mode="json"),
        "repeat": repeat,
        "scope": scope,
        "options": options or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
