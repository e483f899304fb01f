"""Final scores: a chat's LLM scores with the rubric's caps and critical items (致命项) applied.

Hooks are applied when outputs are written, from the stored grade and the stored checks, never
when grading: the LLM's own score stays in the store beside the final one, and a changed hook
needs no new request (rerun `kefu grade`: every grade is skipped and the outputs are rewritten).

The order is fixed: caps in file order, each lowering its criterion to the cap when the current
score is higher; then critical items. A critical item on a criterion reads the LLM's own score,
so a cap alone never fails a chat; one on the checks reads the checks. A failed chat's total is 0
whatever its criteria score (and even when some are unscored: the veto does not depend on them).
A chat without stored checks meets no condition.

A reviewer's decision (a resolved dispute, `kefu review`) is final: its criterion takes the
decided score, no cap applies to it, and a critical item on that criterion reads it instead of the
LLM's. The LLM's own score stays in `llm_scores`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

from pipeline.models.checks import ColumnValue
from pipeline.rubric.conditions import CriticalScore
from pipeline.rubric.model import Rubric


@dataclass(frozen=True)
class Adjustment:
    """One hook that changed a chat's result, with the reason people see."""

    kind: Literal["cap", "critical", "review"]
    reason: str
    criterion_id: str | None = None
    before: int | None = None
    after: int | None = None
    criterion_name: str | None = None
    """The criterion's name in the rubric (its id when the rubric has no such criterion), for people."""

    def describe(self) -> str:
        """For people, Chinese first: '主动性 封顶 3→0：…', '亲切、耐心态度 复核改判 2→4：…', '致命项：亲切、耐心态度
        得 0 分：…' or '致命项：…'."""
        name = self.criterion_name or self.criterion_id
        if self.kind == "cap":
            return f"{name} 封顶 {self.before}→{self.after}：{self.reason}"
        if self.kind == "review":
            return f"{name} 复核改判 {self.before}→{self.after}：{self.reason}"
        if self.criterion_id is not None:
            return f"致命项：{name} 得 {self.before} 分：{self.reason}"
        return f"致命项：{self.reason}"

    def code(self) -> str:
        """For programs: the kind and the criterion id, 'cap:proactivity', 'critical:courtesy_patience', or
        'critical' for a critical item on the service checks."""
        return self.kind if self.criterion_id is None else f"{self.kind}:{self.criterion_id}"


class Decision(NamedTuple):
    """A reviewer's final score of one criterion of one chat, and who decided it and why."""

    score: int
    reason: str
    """'<who>: <note>', shown in the adjustments."""


@dataclass(frozen=True)
class AdjustedScores:
    """A chat's LLM scores, its final scores, and the adjustments between them."""

    llm_scores: dict[str, int | None]
    scores: dict[str, int | None]
    adjustments: tuple[Adjustment, ...]

    @property
    def critical_failed(self) -> bool:
        """Whether a critical item failed the chat (its total is then 0)."""
        return any(a.kind == "critical" for a in self.adjustments)

    def describe(self, criterion_id: str | None = None) -> str | None:
        """The adjustments for people as one text ('；'-joined), of one criterion or of the chat; None if none."""
        texts = [a.describe() for a in self.adjustments if criterion_id is None or a.criterion_id == criterion_id]
        return "；".join(texts) or None

    def codes(self) -> str | None:
        """The adjustments for programs, `Adjustment.code()` ';'-joined in the same order; None if none."""
        return ";".join(a.code() for a in self.adjustments) or None


def apply_hooks(rubric: Rubric, llm_scores: Mapping[str, int | None],
                checks: Mapping[str, ColumnValue] | None,
                decisions: Mapping[str, Decision] | None = None) -> AdjustedScores:
    """The final scores of one chat × repeat from its LLM scores, its stored check columns and the
    reviewers' decisions on its criteria."""
    facts: Mapping[str, ColumnValue] = checks or {}
    decided = {cid: d for cid, d in (decisions or {}).items() if cid in llm_scores}
    scores = dict(llm_scores)
    adjustments: list[Adjustment] = []
    for cap in rubric.caps:
        current = scores.get(cap.criterion)
        if cap.criterion not in decided and current is not None and current > cap.cap and cap.when.holds(facts):
            scores[cap.criterion] = cap.cap
            adjustments.append(Adjustment("cap", cap.reason, cap.criterion, current, cap.cap,
                                          _name(rubric, cap.criterion)))
    for cid, decision in decided.items():
        scores[cid] = decision.score
        adjustments.append(Adjustment("review", decision.reason, cid, llm_scores[cid], decision.score,
                                      _name(rubric, cid)))
    for item in rubric.critical:
        if isinstance(item, CriticalScore):
            llm = decided[item.criterion].score if item.criterion in decided else llm_scores.get(item.criterion)
            if llm is not None and llm <= item.at_or_below:
                adjustments.append(Adjustment("critical", item.reason, item.criterion, llm,
                                              criterion_name=_name(rubric, item.criterion)))
        elif item.when.holds(facts):
            adjustments.append(Adjustment("critical", item.reason))
    return AdjustedScores(dict(llm_scores), scores, tuple(adjustments))


def _name(rubric: Rubric, criterion_id: str) -> str:
    """Looked up only when a hook changes something, which few chats need."""
    try:
        return rubric.criterion(criterion_id).name
    except KeyError:
        return criterion_id
