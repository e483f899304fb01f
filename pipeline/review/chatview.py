"""One chat beside its grades: the page and `GET /api/chats/{id}` both show this view.

Turn text is cut into segments so that the page can mark, without any HTML in the data, where an
evidence quote was found, where a banned phrase or a 不-refusal was hit, and which replies waited
longer than the reply limit. A quote the grader could not verify is listed as unverified and never
marked in the text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from typing import Any

from pipeline.models.checks import ColumnValue
from pipeline.models.transcript import Transcript
from pipeline.outputs.exports import load_decisions, stored_check_columns
from pipeline.review.runs import ReviewRun
from pipeline.rubric.hooks import Decision, apply_hooks
from pipeline.store.store import Store

ROLE_NAMES = {"customer": "顾客", "agent": "客服", "bot": "机器人", "system": "系统"}
_MARKED_GROUPS = {"banned": "违禁用语", "negation_refusal": "否定拒绝"}


@dataclass
class Segment:
    """A piece of a turn's text and what marks it."""

    text: str
    marks: list[str] = field(default_factory=list)
    """'evidence' and/or a phrase group id."""
    notes: list[str] = field(default_factory=list)
    """What a person sees on hover: the criteria quoting it, the phrase hit."""


@dataclass
class TurnView:
    number: int
    role: str
    role_name: str
    speaker: str | None
    time: str | None
    wait_s: float | None
    """For a reply: how long the customer message it answers waited."""
    breach: bool
    """The wait exceeded the reply limit."""
    segments: list[Segment]


@dataclass
class EvidenceView:
    turn: int
    quote: str
    verified: bool
    located: bool
    """Found verbatim in the turn's text and marked there."""


@dataclass
class CriterionView:
    id: str
    name: str
    max: int
    llm_score: int | None
    final_score: int | None
    level: str | None
    """The description of the final score's level."""
    reasoning: str
    adjustment: str | None
    evidence: list[EvidenceView]
    levels: list[tuple[int, str]]


@dataclass
class RepeatView:
    repeat: int
    status: str
    model: str
    total: int | None
    llm_total: int | None
    critical_failed: bool
    adjustments: str | None
    criteria: list[CriterionView]


@dataclass
class ChatView:
    transcript_id: str
    platform: str | None
    shop: str | None
    agent_id: str | None
    started_at: str | None
    source: str | None
    text_available: bool
    turns: list[TurnView]
    repeats: list[RepeatView]
    checks: dict[str, Any] | None
    labels: list[dict[str, Any]]
    disputes: list[dict[str, Any]]
    audit: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        """The API's body."""
        from dataclasses import asdict

        return asdict(self)


def load_chat(run: ReviewRun, transcript_id: str) -> ChatView | None:
    """The chat's view, or None when the run has no such chat."""
    with run.store() as store:
        meta = store.transcript_row(transcript_id)
        if meta is None:
            return None
        grades = store.transcript_grade_rows(transcript_id, rubric_hash=run.rubric_hash)
        record = json.loads(meta.checks) if meta.checks else None
        decisions = load_decisions(store).get(transcript_id)
        people = _people(store, transcript_id)
    chat = run.chats.transcript(transcript_id, meta.source)
    repeats = []
    for repeat, group in groupby(grades, key=lambda g: g.repeat):
        rows = list(group)
        stored = [cg for g in rows for cg in json.loads(g.criteria)]
        repeats.append(_repeat_view(run, repeat, rows[0].model, stored, stored_check_columns(meta.checks),
                                    decisions, chat))
    return ChatView(
        transcript_id=meta.id, platform=meta.platform, shop=meta.shop, agent_id=meta.agent_id,
        started_at=meta.started_at, source=meta.source, text_available=chat is not None,
        turns=_turns(chat, record, repeats), repeats=repeats,
        checks=record["columns"] if record else None, **people,
    )


def _people(store: Store, transcript_id: str) -> dict[str, list[dict[str, Any]]]:
    """The chat's labels, disputes and audit lines, as the API returns them."""
    return {"labels": [r._asdict() for r in store.labels(transcript_id)],
            "disputes": [r._asdict() for r in store.disputes(transcript_id=transcript_id)],
            "audit": [r._asdict() for r in store.audit_trail(transcript_id)]}


def _repeat_view(run: ReviewRun, repeat: int, model: str, stored: list[dict[str, Any]],
                 checks: Mapping[str, ColumnValue] | None, decisions: Mapping[str, Decision] | None,
                 chat: Transcript | None) -> RepeatView:
    by_id = {cg["criterion_id"]: cg for cg in stored}
    llm = {cid: (by_id[cid]["score"] if cid in by_id else None) for cid in run.criteria}
    adjusted = apply_hooks(run.rubric, llm, checks, decisions)
    criteria = []
    for cid, criterion in run.criteria.items():
        cg = by_id.get(cid, {"reasoning": "", "evidence": []})
        final = adjusted.scores[cid]
        levels = [(lv.points, lv.description) for lv in criterion.levels_ascending()]
        criteria.append(CriterionView(
            id=cid, name=criterion.name, max=criterion.max, llm_score=llm[cid], final_score=final,
            level=next((d for p, d in levels if p == final), None), reasoning=cg["reasoning"],
            adjustment=adjusted.describe(cid),
            evidence=[EvidenceView(e["turn"], e["quote"], e["verified"], _located(chat, e)) for e in cg["evidence"]],
            levels=levels,
        ))
    total = None if None in adjusted.scores.values() else sum(v or 0 for v in adjusted.scores.values())
    llm_total = None if None in llm.values() else sum(v or 0 for v in llm.values())
    return RepeatView(
        repeat=repeat, status="scored" if total is not None else "unscored", model=model,
        total=0 if adjusted.critical_failed else total, llm_total=llm_total,
        critical_failed=adjusted.critical_failed, adjustments=adjusted.describe(), criteria=criteria,
    )


def _located(chat: Transcript | None, evidence: dict[str, Any]) -> bool:
    turn = evidence["turn"]
    return (evidence["verified"] and chat is not None and 1 <= turn <= len(chat.turns)
            and bool(evidence["quote"]) and evidence["quote"] in chat.turns[turn - 1].text)


def _turns(chat: Transcript | None, record: dict[str, Any] | None, repeats: list[RepeatView]) -> list[TurnView]:
    if chat is None:
        return []
    marks: dict[int, list[tuple[int, int, str, str]]] = {}
    for rep in repeats[:1]:  # the first repeat's evidence; the others are shown beside it
        for c in rep.criteria:
            for e in c.evidence:
                if e.located:
                    start = chat.turns[e.turn - 1].text.index(e.quote)
                    marks.setdefault(e.turn, []).append((start, start + len(e.quote), "evidence", c.name))
    waits: dict[int, float] = {}
    limit = None
    if record is not None:
        for hit in record["phrases"]["hits"]:
            if hit["group"] in _MARKED_GROUPS:
                note = _MARKED_GROUPS[hit["group"]] + (f"，建议：{hit['suggestion']}" if hit.get("suggestion") else "")
                marks.setdefault(hit["turn"], []).append((hit["start"], hit["end"], hit["group"], note))
        for wait in record["timing"].get("message_waits") or []:
            if wait.get("reply_turn") is not None and wait.get("wait_s") is not None:
                waits[wait["reply_turn"]] = max(waits.get(wait["reply_turn"], 0.0), wait["wait_s"])
        limit = record["thresholds"]["reply_within_s"]
    return [
        TurnView(number=n, role=t.role.value, role_name=ROLE_NAMES.get(t.role.value, t.role.value),
                 speaker=t.speaker, time=t.time.isoformat(sep=" ") if t.time else None, wait_s=waits.get(n),
                 breach=limit is not None and waits.get(n, 0.0) > limit,
                 segments=split_marked(t.text, marks.get(n, [])))
        for n, t in enumerate(chat.turns, 1)
    ]


def split_marked(text: str, marks: list[tuple[int, int, str, str]]) -> list[Segment]:
    """The text cut at every mark's start and end; each piece lists the marks covering it (overlaps allowed)."""
    cuts = sorted({0, len(text), *(max(0, min(len(text), p)) for s, e, _, _ in marks for p in (s, e))})
    segments = []
    for start, end in pairwise(cuts):
        covering = [m for m in marks if m[0] <= start and end <= m[1]]
        segments.append(Segment(text[start:end], sorted({m[2] for m in covering}), [m[3] for m in covering]))
    return segments
