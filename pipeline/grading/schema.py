"""The structured-output model built from a rubric: what the LLM must return, as pydantic and JSON schema.

Built once per rubric, criterion set and mode (never per call). For each criterion the reply holds
the evidence and a short reasoning *before* the score (compact mode: below), and the score can only be one of that
criterion's level points (an enum in the JSON schema), so a model cannot invent a 2 on a 0/1/3 scale.

Compact mode is for small local models, which write slowly (6-7 tokens a second on two cores) and
ramble: the score comes first, a criterion at its maximum level is the score alone, and one below it
adds one short quote and one short sentence. The limits are in the schema itself (`anyOf`, `maxItems`,
`maxLength`), because llama.cpp turns them into its decoding grammar and so the model cannot exceed
them. The default schema carries no `maxLength`: OpenAI's strict mode rejects it, so there the
lengths are only asked for in the prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, create_model

from pipeline.rubric.model import Criterion

#: Keep quotes and reasoning short: long outputs cost money and small models ramble.
MAX_EVIDENCE = 3
#: Characters per quote and per reasoning the default prompt asks for (not in the schema: see above).
QUOTE_CHARS = 40
REASONING_CHARS = 80
#: Compact mode's limits, enforced by the schema (the local model wrote 1,200-1,400 tokens a chat without any,
#: and about 870 with one 24-character quote and 30 characters of reasoning for every criterion).
COMPACT_MAX_EVIDENCE = 1
COMPACT_QUOTE_CHARS = 16
COMPACT_REASONING_CHARS = 20


class ReplyLimits(NamedTuple):
    """How much evidence and text a reply may hold per criterion: what the prompt tells the model."""

    evidence: int
    quote_chars: int
    reasoning_chars: int
    score_first: bool
    """Compact mode: the score first, and evidence and reasoning only below the maximum level."""


def reply_limits(compact: bool) -> ReplyLimits:
    """The limits of a mode, for the prompt; compact mode's are also the schema's."""
    if compact:
        return ReplyLimits(COMPACT_MAX_EVIDENCE, COMPACT_QUOTE_CHARS, COMPACT_REASONING_CHARS, score_first=True)
    return ReplyLimits(MAX_EVIDENCE, QUOTE_CHARS, REASONING_CHARS, score_first=False)


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


class CompactEvidence(Evidence):
    """A short quote from the transcript that supports a score (compact mode)."""

    quote: str = Field(
        max_length=COMPACT_QUOTE_CHARS,
        description=f"Words copied verbatim from that turn, at most {COMPACT_QUOTE_CHARS} characters.",
    )


class CompactCriterionReply(BaseModel):
    """The base of compact mode's reply below a criterion's maximum: score, one quote, one short sentence.

    The score comes first so that the grammar knows whether evidence and reasoning follow at all.
    """

    model_config = ConfigDict(extra="forbid")

    score: int = Field(description="One of the criterion's level points below its maximum.")
    evidence: list[CompactEvidence] = Field(
        max_length=COMPACT_MAX_EVIDENCE,
        description=f"At most {COMPACT_MAX_EVIDENCE} verbatim quote (at most {COMPACT_QUOTE_CHARS} characters) "
                    "supporting the score.",
    )
    reasoning: str = Field(
        max_length=COMPACT_REASONING_CHARS,
        description=f"One short sentence, at most {COMPACT_REASONING_CHARS} characters: why this level "
                    "and not the next one.",
    )


class CompactFullReply(BaseModel):
    """The base of compact mode's reply at a criterion's maximum: the score alone.

    Nothing is missing to explain, and on a CPU every token left out is time saved; the grader reads
    the same `evidence` and `reasoning` as from any reply, empty.
    """

    model_config = ConfigDict(extra="forbid")

    score: int = Field(description="The criterion's maximum.")

    @property
    def evidence(self) -> list[Evidence]:
        return []

    @property
    def reasoning(self) -> str:
        return ""


@dataclass(frozen=True)
class GradeSchema:
    """A reply model for a set of criteria, with its JSON schema and the response_format to send."""

    criterion_ids: tuple[str, ...]
    model: type[BaseModel]
    json_schema: dict[str, Any]
    response_format: dict[str, Any]
    schema_hash: str

    def scores_allowed(self, criterion_id: str) -> list[int]:
        """The scores the schema sent allows for a criterion, ascending (compact mode splits them in two branches)."""
        definitions = self.json_schema["$defs"]
        allowed: set[int] = set()
        for name in (_reply_name(criterion_id), _full_reply_name(criterion_id)):
            if name not in definitions:  # the default schema has no branch for the maximum
                continue
            prop = definitions[name]["properties"]["score"]
            allowed.update(prop["enum"] if "enum" in prop else [prop["const"]])
        return sorted(allowed)


def compact_reply_token_bound(criteria: Sequence[Criterion]) -> int:
    """An upper bound on the completion tokens of a compact reply, for sizing a local model's cap.

    The longest reply compact mode allows (every limit filled, four-digit turn numbers, indented
    JSON) with every character counted as a token: tokenizers spend at most about one token on a
    CJK character or a digit and far less on JSON punctuation, so the bound leaves room for the
    whitespace a model may add between tokens.
    """
    longest = {
        c.id: {
            "score": max(c.points, key=lambda p: len(str(p))),
            "evidence": [{"turn": 9999, "quote": "字" * COMPACT_QUOTE_CHARS}] * COMPACT_MAX_EVIDENCE,
            "reasoning": "字" * COMPACT_REASONING_CHARS,
        }
        for c in criteria
    }
    return len(json.dumps(longest, ensure_ascii=False, indent=2))


def _reply_name(criterion_id: str) -> str:
    return f"Reply_{criterion_id}"


def _full_reply_name(criterion_id: str) -> str:
    return f"Reply_{criterion_id}_max"


def _criterion_model(c: Criterion, base: type[BaseModel], name: str, points: Sequence[int]) -> type[BaseModel]:
    score_type: Any = Literal[tuple(points)]
    return create_model(
        name,
        __base__=base,
        __doc__=f"{c.name} (max {c.max})",
        score=(score_type, Field(description=f"One of {list(points)}.")),
    )


def _default_reply(c: Criterion) -> Any:
    return _criterion_model(c, CriterionReply, _reply_name(c.id), c.points)


def _compact_reply(c: Criterion) -> Any:
    """The score alone at the maximum, else score, evidence and reasoning: a union the grammar decodes."""
    full = _criterion_model(c, CompactFullReply, _full_reply_name(c.id), [c.max])
    # A criterion has at least two levels, so there is always a level below the maximum.
    return full | _criterion_model(c, CompactCriterionReply, _reply_name(c.id), [p for p in c.points if p != c.max])


_BUILT: dict[tuple[bool, tuple[tuple[str, str, int, tuple[int, ...]], ...]], GradeSchema] = {}


def build_grade_schema(criteria: Sequence[Criterion], *, compact: bool = False) -> GradeSchema:
    """The reply model for these criteria, with fields named by criterion id in rubric order.

    `compact` builds it with compact mode's limits in the schema and in validation, so a reply from
    an endpoint that ignores the schema's limits is re-asked like any other invalid reply.
    Memoised on exactly what the model is built from (the mode, and each criterion's id, name, max
    and points), so the grader can ask per call: the key costs microseconds, where dumping the
    criteria would not.
    """
    key = (compact, tuple((c.id, c.name, c.max, tuple(c.points)) for c in criteria))
    if key not in _BUILT:
        _BUILT[key] = _build(criteria, _compact_reply if compact else _default_reply)
    return _BUILT[key]


def _build(criteria: Sequence[Criterion], reply: Callable[[Criterion], Any]) -> GradeSchema:
    fields: dict[str, Any] = {c.id: (reply(c), ...) for c in criteria}
    model = create_model("GradeReply", __config__=ConfigDict(extra="forbid"), **fields)
    schema = model.model_json_schema()
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "grade", "strict": True, "schema": schema},
    }
    digest = hashlib.sha256(json.dumps(schema, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return GradeSchema(tuple(c.id for c in criteria), model, schema, response_format, digest)
