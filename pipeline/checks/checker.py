"""Service-standard checks of one transcript: timing and phrase reports, the record stored per transcript.

The checks are deterministic code (pipeline/checks/timing.py, pipeline/checks/phrases.py), run once per
transcript on the ORIGINAL text before any redaction, and stored in the store's
`transcripts.checks` column. Their flat columns (`TranscriptChecks.columns`) are what scores.csv
shows and what rubric hooks (`caps`, `critical`) may name; `CHECKS` is that vocabulary with the
kind of value each column holds, so a rubric naming an unknown check or comparing a flag with a
number fails on load.
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.checks import lexicons as lexicons_code
from pipeline.checks import normalization as normalization_code
from pipeline.checks import phrases as phrases_code
from pipeline.checks import timing as timing_code
from pipeline.checks.lexicons import Lexicons, PhraseGroup, load_lexicons
from pipeline.checks.phrases import PhraseChecker, PhraseReport
from pipeline.checks.timing import SessionTiming, ShopCalendar, TimingThresholds, measure_session
from pipeline.models.checks import ColumnValue
from pipeline.models.transcript import Transcript
from pipeline.paths import RUBRIC_DIR

DEFAULT_LEXICONS = RUBRIC_DIR / "lexicons.yaml"


class TranscriptChecks(BaseModel):
    """What the checks found in one transcript, as stored in `transcripts.checks` (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    transcript_hash: str | None = Field(default=None, description="Content hash of the original transcript checked.")
    checker: str = Field(description="Fingerprint of the lexicons, thresholds and calendar the checks used.")
    lexicon_version: str = Field(description="`version` of the lexicon file the phrases were checked with.")
    thresholds: TimingThresholds = Field(description="The time limits the timing flags were computed with.")
    timing: SessionTiming = Field(description="Response times, per message and per burst.")
    phrases: PhraseReport = Field(description="Lexicon hits in the agent's replies.")

    def columns(self) -> dict[str, ColumnValue]:
        """The flat check columns, keyed as in `CHECKS`."""
        return self.timing.columns() | self.phrases.columns() | self.greeting_columns()

    def greeting_columns(self) -> dict[str, ColumnValue]:
        """Seed 002 欢迎语: within 10 s of the customer's signal the agent must answer WITH a greeting (问候语).

        `greeting_text` is the standard openers in the agent's first reply to the customer (the
        reply the timing measures), joined by 、; `greeted_within_limit` holds when that reply came
        within `greet_within_s` and has one. It is None when the timing is (not measurable, no
        customer message), and False when no agent replied.
        """
        turn = self.timing.first_response_turn
        words = [h.text for h in self.phrases.hits if h.group is PhraseGroup.greetings and h.turn == turn]
        in_time = self.timing.first_reply_within_greet_limit
        return {
            "greeting_text": "、".join(words) if words else None,
            "greeted_within_limit": in_time and bool(words) if in_time is not None else None,
        }

    def record(self) -> dict[str, Any]:
        """The JSON stored in `transcripts.checks`: the reports, plus their flat `columns` so that
        exports read a million rows without re-validating every report."""
        return self.model_dump(mode="json") | {"columns": self.columns()}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TranscriptChecks:
        """The reports back from a stored record."""
        return cls.model_validate({k: v for k, v in record.items() if k != "columns"})


class ServiceChecker:
    """Lexicons compiled once per run, then applied to every transcript."""

    def __init__(self, lexicons: Lexicons, thresholds: TimingThresholds | None = None,
                 calendar: ShopCalendar | None = None) -> None:
        self._phrases = PhraseChecker(lexicons)
        self.lexicons = lexicons
        self.thresholds = thresholds or TimingThresholds()
        self.calendar = calendar or ShopCalendar()
        setup = [m.model_dump(mode="json") for m in (lexicons, self.thresholds, self.calendar)]
        digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode())
        code = (timing_code, lexicons_code, normalization_code, phrases_code, sys.modules[__name__])
        for module in code:  # the code that makes a record, too
            digest.update(Path(module.__file__ or "").read_bytes())
        self.fingerprint = digest.hexdigest()[:16]
        """Changes with any lexicon entry, threshold, time zone or line of the checking code: stored
        checks with another fingerprint are stale."""

    @classmethod
    def load(cls, lexicon_path: Path = DEFAULT_LEXICONS) -> ServiceChecker:
        """A checker over the lexicon file (RubricError, naming the file, if it is invalid)."""
        return cls(load_lexicons(lexicon_path))

    def check(self, transcript: Transcript, transcript_hash: str | None = None) -> TranscriptChecks:
        """Timing and phrases of one transcript; pass the original, not a redacted copy."""
        return TranscriptChecks(
            transcript_hash=transcript_hash,
            checker=self.fingerprint,
            lexicon_version=self.lexicons.version,
            thresholds=self.thresholds,
            timing=measure_session(transcript, self.thresholds, self.calendar,
                                   satisfaction=transcript.satisfaction),
            phrases=self._phrases.check(transcript),
        )

    def is_current(self, stored: Mapping[str, Any] | None, transcript_hash: str) -> bool:
        """Whether a stored record was made by this checker from this transcript (so need not be made again)."""
        return stored is not None and stored.get("transcript_hash") == transcript_hash \
            and stored.get("checker") == self.fingerprint

    def record_for(self, transcript: Transcript, transcript_hash: str,
                   stored: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The checks record to store: `stored` itself when it is current (so a resumed run checks
        nothing twice), else the record of a new check."""
        if stored is not None and self.is_current(stored, transcript_hash):
            return dict(stored)
        return self.check(transcript, transcript_hash).record()


def record_json(record: Mapping[str, Any]) -> str:
    """A checks record as the store keeps it (`transcripts.checks`): one encoding for every path."""
    return json.dumps(record, ensure_ascii=False)
