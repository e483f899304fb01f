"""The grades one transcript needs: the text that is sent, its hash, and each call's resume key.

Online grading (`grading.runner`) and batch files (`batch.files`) both plan a transcript here, so a
transcript gets the same keys either way and a run folder can mix the two: `kefu grade` skips what a
batch graded, and a batch skips what `kefu grade` did. Redaction is decided once, here: with it on,
the copy sent is the redacted one and `{"redact": true}` joins every key's options.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.grading.prompting import transcript_hash
from pipeline.grading.redaction import RedactionConfig, RedactionResult, redact_transcript
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Transcript
from pipeline.rubric.model import Criterion
from pipeline.store.rows import grade_key


@dataclass(frozen=True, slots=True)
class PlannedGrade:
    """One call: which repeat, on which criteria, stored under which key."""

    repeat: int
    scope: str
    criteria: list[Criterion]
    key: str


@dataclass(frozen=True, slots=True)
class TranscriptPlan:
    """A transcript as it is sent, and every call it needs, repeat by repeat, in scope order within each."""

    transcript: Transcript
    """What is rendered into the prompt: the redacted copy, or the transcript itself."""
    content_hash: str
    """`transcript_hash` of what is sent: the keys' transcript part."""
    redacted: RedactionResult | None
    grades: list[PlannedGrade]


class GradePlanner:
    """Turns each transcript into its planned grades under one run's settings."""

    def __init__(self, *, rubric_hash: str, template_hash: str, model: str, sampling: Sampling,
                 scopes: Sequence[tuple[str, list[Criterion]]], repeats: int,
                 key_options: dict[str, object] | None, redaction: RedactionConfig | None) -> None:
        self._rubric_hash = rubric_hash
        self._template_hash = template_hash
        self._model = model
        self._sampling = sampling
        self._scopes = list(scopes)
        self._repeats = repeats
        self._redaction = redaction
        self.key_options = {**(key_options or {}), "redact": True} if redaction is not None else key_options
        """The options every key is made with (what the store's settings and the line memo record)."""

    def plan(self, item: Transcript) -> TranscriptPlan:
        """The transcript to send, its hash, and a key for every (repeat, scope)."""
        redacted = redact_transcript(item, self._redaction) if self._redaction is not None else None
        transcript = redacted.transcript if redacted is not None else item
        thash = transcript_hash(transcript)
        grades = [
            PlannedGrade(repeat, scope, crits, grade_key(
                transcript_hash=thash, rubric_hash=self._rubric_hash, template_hash=self._template_hash,
                model=self._model, sampling=self._sampling, repeat=repeat, scope=scope, options=self.key_options,
            ))
            for repeat in range(self._repeats)
            for scope, crits in self._scopes
        ]
        return TranscriptPlan(transcript, thash, redacted, grades)
