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

    def describe(self) -> str:
        """'proactivity capped 3→0: …' or 'critical: courtesy_patience scored 0: …'."""
        if self.kind == "cap":
            return f"{self.criterion_id} capped {self.before}→{self.after}: {self.reason}"
        if self.kind == "review":
            return f"{self.criterion_id} 复核 {self.before}→{self.after}: {self.reason}"
        if self.criterion_id is not None:
            return f"critical: {self.criterion_id} scored {self.before}: {self.reason}"
        return f"critical: {self.reason}"


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
        """The adjustments as one text ('; '-joined), of one criterion or of the chat; None if there are none."""
        texts = [a.describe() for a in self.adjustments if criterion_id is None or a.criterion_id == criterion_id]
        return "; ".join(texts) or None


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
            adjustments.append(Adjustment("cap", cap.reason, cap.criterion, current, cap.cap))
    for cid, decision in decided.items():
        scores[cid] = decision.score
        adjustments.append(Adjustment("review", decision.reason, cid, llm_scores[cid], decision.score))
    for item in rubric.critical:
        if isinstance(item, CriticalScore):
            llm = decided[item.criterion].score if item.criterion in decided else llm_scores.get(item.criterion)
            if llm is not None and llm <= item.at_or_below:
                adjustments.append(Adjustment("critical", item.reason, item.criterion, llm))
        elif item.when.holds(facts):
            adjustments.append(Adjustment("critical", item.reason))
    return AdjustedScores(dict(llm_scores), scores, tuple(adjustments))
