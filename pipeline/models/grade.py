"""A stored grade as data: the sampling settings, each criterion's result and its checked evidence.

The store, the outputs and the grader all read these; they hold validation only, no I/O.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class InjectionHit(BaseModel):
    """One field of a chat that matched a pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: Literal["turn", "shop", "platform"] = Field(description="Where the text is.")
    turn: int | None = Field(default=None, description="1-based turn number when `field` is turn.")
    pattern: str = Field(description="The pattern id (data/injection.yaml).")
    text: str = Field(description="The matched text, normalised, shortened (checks/injection.py SNIPPET_CHARS).")

    def where(self) -> str:
        """`turn 3` or `shop`: the cell scores.csv shows."""
        return f"turn {self.turn}" if self.field == "turn" else self.field


INJECTION_HITS = TypeAdapter(list[InjectionHit])
"""A grade's hits as one value, for storing them as JSON."""


ResponseMode = Literal["auto", "json_schema", "json_object"]
Status = Literal["scored", "unscored"]


class Sampling(BaseModel):
    """Sampling parameters: part of every grade's resume key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float | None = Field(default=0.0, description="Sampling temperature; None leaves the default.")
    seed: int | None = Field(default=None, description="Sampling seed, where the endpoint honours one.")
    max_tokens: int | None = Field(default=4096, description="Cap on completion tokens per call.")


VerifyFailure = Literal["not_in_turn", "wrong_speaker", "injection_suspected"]


class QuotedEvidence(BaseModel):
    """A quote the model cited, and whether it was found verbatim in the cited turn of the right speaker."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(description="1-based turn number as cited.")
    quote: str = Field(description="The quote as the model wrote it.")
    verified: bool = Field(description="True if the quote occurs in that turn's text (whitespace/width-insensitive) "
                           "and the turn's speaker is the side the criterion judges, and the turn is not suspected "
                           "of addressing the grader (checks/injection.py).")
    verify_failed: VerifyFailure | None = Field(
        default=None, description="Which check failed: not_in_turn (no such turn, or the quote is not in it), "
                                  "wrong_speaker (in the turn, but said by the other side) or injection_suspected "
                                  "(the turn addresses the grader); None when verified.")


class CriterionGrade(BaseModel):
    """One criterion's result inside a graded call."""

    model_config = ConfigDict(extra="forbid")

    criterion_id: str = Field(description="Rubric criterion id.")
    score: int | None = Field(description="Points awarded; None when unscored (never 0 for a failure).")
    reasoning: str = Field(default="", description="The model's short reasoning.")
    evidence: list[QuotedEvidence] = Field(default_factory=list, description="Cited quotes, checked.")


CRITERION_GRADES = TypeAdapter(list[CriterionGrade])
"""A grade's criteria as one value, for validating and serialising them in one call."""


class Grade(BaseModel):
    """The stored result of one call: a transcript × repeat × scope ('all' or one criterion id)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Resume key (see store.grade_key).")
    transcript_id: str = Field(description="Transcript id.")
    repeat: int = Field(description="Repeat index, 0-based.")
    scope: str = Field(description="'all' for one call for every criterion, else the criterion id.")
    status: Status = Field(description="scored, or unscored with `error`.")
    criteria: list[CriterionGrade] = Field(description="Per-criterion results (scores None when unscored).")
    model: str = Field(description="Model name as requested.")
    attempts: int = Field(description="HTTP attempts made, retries and the re-ask included.")
    prompt_tokens: int = Field(default=0, description="Prompt tokens over all attempts that returned usage.")
    cached_tokens: int | None = Field(default=None, description="Prompt tokens served from the provider's cache.")
    completion_tokens: int = Field(default=0, description="Completion tokens over all attempts.")
    error: str | None = Field(default=None, description="Why the grade is unscored.")
    raw: str | None = Field(default=None, description="The last raw reply, kept for unscored grades only.")
    response_mode: str = Field(default="json_schema", description="json_schema or json_object, as used.")
    latency_s: float = Field(default=0.0, description="Wall time of the grade, retries included.")
    created_at: datetime = Field(description="UTC time the grade finished.")
    injection: list[InjectionHit] = Field(
        default_factory=list, description="Fields of the chat as sent that address the grader: a reason to review."
    )


class TokenTally(Protocol):
    """A running count of the tokens some grades used: a run's summary, a batch collect's result."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


def add_tokens(tally: TokenTally, grade: Grade) -> None:
    """Add the tokens `grade` used to `tally` (a grade that reports no cached tokens adds none)."""
    tally.prompt_tokens += grade.prompt_tokens
    tally.cached_tokens += grade.cached_tokens or 0
    tally.completion_tokens += grade.completion_tokens
