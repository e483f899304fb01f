"""The "differ most" list as the report shows it: each transcript's evidence, stored checks and marked chat."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.consistency.results import CheckResult, Difference
from pipeline.models.grade import CriterionGrade
from pipeline.models.transcript import Transcript
from pipeline.store.store import DB_NAME, Store


class EvidenceView(NamedTuple):
    """One criterion of a listed transcript, with the judge's words."""

    criterion: str
    judge: int
    human: float
    reasoning: str
    quotes: list[tuple[int, str, bool]]


ChatTurn = tuple[str, list[tuple[str, bool]]]
"""A turn as the report shows it: the role, and its text in pieces, each marked when the judge quoted it."""


class DifferenceView(NamedTuple):
    """A listed transcript as the report shows it."""

    difference: Difference
    evidence: list[EvidenceView]
    checks: list[tuple[str, str]]
    chat: list[ChatTurn]
    """The chat, with the judge's verbatim quotes marked; empty when the report was written without it."""


def marked_turns(transcript: Transcript, quotes: Iterable[tuple[int, str]]) -> list[ChatTurn]:
    """Each turn's text split into pieces, the pieces the judge quoted (1-based turn, verbatim) marked.

    Only verbatim occurrences are marked; overlapping quotes merge. The pieces stay text: the template
    escapes them, so a chat's `<script>` is shown, never run.
    """
    by_turn: dict[int, list[str]] = {}
    for cited, quote in quotes:
        if quote.strip():
            by_turn.setdefault(cited, []).append(quote)
    out: list[ChatTurn] = []
    for position, turn in enumerate(transcript.turns, start=1):
        text = turn.text
        marked = [False] * len(text)
        for quote in by_turn.get(position, []):
            start = text.find(quote)
            while start >= 0:
                marked[start:start + len(quote)] = [True] * len(quote)
                start = text.find(quote, start + 1)
        pieces: list[tuple[str, bool]] = []
        for ch, m in zip(text, marked, strict=True):
            if pieces and pieces[-1][1] == m:
                pieces[-1] = (pieces[-1][0] + ch, m)
            else:
                pieces.append((ch, m))
        out.append((turn.role.value, pieces))
    return out


def _check_items(checks: Any) -> list[tuple[str, str]]:
    """A transcript's stored deterministic checks as (name, value) lines, when there are any.

    The record is keyed JSON owned by pipeline/checks/checker.py; its flat `columns` are the summary meant
    for people, so they are shown when present, else the top-level keys. Empty (null) values are left out.
    """
    if not isinstance(checks, dict):
        return []
    flat = checks["columns"] if isinstance(checks.get("columns"), dict) else checks
    return [(str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
            for k, v in flat.items() if v is not None]


def difference_views(result: CheckResult, out_dir: Path,
                     chats: Mapping[str, Transcript] | None = None) -> list[DifferenceView]:
    """The listed transcripts with the judge's repeat-0 reasoning and quotes, any stored checks and, when
    `chats` has them, their text with the quotes marked."""
    wanted = {d.transcript_id for d in result.differences}
    grades: dict[tuple[str, str], CriterionGrade] = {}
    meta: dict[str, dict[str, Any]] = {}
    if wanted and (out_dir / DB_NAME).exists():
        with Store.open(out_dir) as store:
            for grade in store.iter_grades(rubric_hash=result.rubric_hash):
                if grade.transcript_id in wanted and grade.repeat == 0 and grade.model == result.model:
                    grades.update({(grade.transcript_id, cg.criterion_id): cg for cg in grade.criteria})
            meta = store.transcript_meta()
    names = {c.criterion_id: c.name for c in result.criteria}
    views = []
    for d in result.differences:
        evidence = []
        for gap in d.criteria:
            cg = grades.get((d.transcript_id, gap.criterion_id))
            evidence.append(EvidenceView(
                criterion=names.get(gap.criterion_id, gap.criterion_id), judge=gap.judge, human=gap.human,
                reasoning=cg.reasoning if cg else "", quotes=[(e.turn, e.quote, e.verified) for e in cg.evidence]
                if cg else [],
            ))
        chat = (chats or {}).get(d.transcript_id)
        quotes = [(turn, quote) for e in evidence for turn, quote, _ in e.quotes]
        views.append(DifferenceView(d, evidence, _check_items((meta.get(d.transcript_id) or {}).get("checks")),
                                    marked_turns(chat, quotes) if chat else []))
    return views
