"""The structured-output model built from a rubric: what the LLM must return, as pydantic and JSON schema.

Built once per rubric and criterion set (never per call). For each criterion the reply holds the
evidence and a short reasoning *before* the score, and the score can only be one of that
criterion's level points (an enum in the JSON schema), so a model cannot invent a 2 on a 0/1/3 scale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.rubric import Criterion

#: Keep quotes and reasoning short: long outputs cost money and small models ramble.
MAX_EVIDENCE = 3


class Evidence(BaseModel):
    """A quote from the transcript that supports a score."""

    model_config = ConfigDict(extra="forbid")

    turn: int = Field(description="The 1-based number of the turn the quote comes from, as numbered in the prompt.")
    quote: str = Field(description="Words copied verbatim from that turn.")


class CriterionReply(BaseModel):
    """The base of every per-criterion reply model: evidence, reasoning, then score."""

    model_config = ConfigDict(extra="forbid")

    evidence: list[Evidence] = Field(
        max_length=MAX_EVIDENCE, description="Up to three short verbatim quotes supporting the score."
    )
    reasoning: str = Field(description="One or two sentences: why this level and not the next one.")
    score: int = Field(description="One of the criterion's level points.")


@dataclass(frozen=True)
class GradeSchema:
    """A reply model for a set of criteria, with its JSON schema and the response_format to send."""

    criterion_ids: tuple[str, ...]
    model: type[BaseModel]
    json_schema: dict[str, Any]
    response_format: dict[str, Any]
    schema_hash: str

    def scores_allowed(self, criterion_id: str) -> list[int]:
        """The enum of allowed scores sent for a criterion (used by tests and the json_object re-ask)."""
        prop = self.json_schema["$defs"][_reply_name(criterion_id)]["properties"]["score"]
        return list(prop["enum"])


def _reply_name(criterion_id: str) -> str:
    return f"Reply_{criterion_id}"


def _criterion_model(c: Criterion) -> type[CriterionReply]:
    score_type: Any = Literal[tuple(c.points)]
    return create_model(
        _reply_name(c.id),
        __base__=CriterionReply,
        __doc__=f"{c.name} (max {c.max})",
        score=(score_type, Field(description=f"One of {c.points}.")),
    )


_BUILT: dict[tuple[tuple[str, str, int, tuple[int, ...]], ...], GradeSchema] = {}


def build_grade_schema(criteria: Sequence[Criterion]) -> GradeSchema:
    """The reply model for these criteria, with fields named by criterion id in rubric order.

    Memoised on exactly what the model is built from (each criterion's id, name, max and points), so
    the grader can ask per call: the key costs microseconds, where dumping the criteria would not.
    """
    key = tuple((c.id, c.name, c.max, tuple(c.points)) for c in criteria)
    if key not in _BUILT:
        _BUILT[key] = _build(criteria)
    return _BUILT[key]


def _build(criteria: Sequence[Criterion]) -> GradeSchema:
    fields: dict[str, Any] = {c.id: (_criterion_model(c), ...) for c in criteria}
    model = create_model("GradeReply", __config__=ConfigDict(extra="forbid"), **fields)
    schema = model.model_json_schema()
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "grade", "strict": True, "schema": schema},
    }
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return GradeSchema(tuple(c.id for c in criteria), model, schema, response_format, digest)
