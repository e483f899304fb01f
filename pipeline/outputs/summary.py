"""Team summaries of a graded run: per agent, shop, platform or day, the scores, weakest criteria and service rates.

Definitions (each recomputable by hand from scores.csv and checks.jsonl):
- Scores are the FINAL ones (the rubric's caps and critical items applied, as in scores.csv), over
  rows = transcript × repeat. `mean_total` is over rows with a total (a chat failed by a critical
  item counts as 0); a dimension's mean is over rows where it is not empty.
- The weakest criteria are the `WEAKEST` criteria with the lowest mean share of their maximum
  (mean score / max, over rows where the criterion was scored); ties keep rubric order.
- A row that needs review (a field of its chat addresses the grader: `needs_review` in scores.csv)
  is counted in `needs_review` and left out of every score above: its grade is not trusted.
- Timing rates come from each transcript's stored checks, once per transcript whatever its
  repeats, through `timing.aggregate_timing`: 2分钟首次回复率, 3分钟平均回复率 (per session by
  default, `TimingThresholds.reply_rate_basis`) and 满意度, each with its numerator, denominator
  and pass/fail against `TimingThresholds`. A transcript without checks adds to no rate.
- `banned_rate`: transcripts with at least one banned phrase over transcripts with checks and an
  agent reply; `negation_refusal_rate` likewise for 不-refusals.
- A transcript's group: agent = the checks' agent (Transcript.agent_id, else the speaker of the
  first agent turn), else the stored agent_id; shop and platform as stored; day = the date of the
  first customer message in the shop's zone (from the checks). Unknown values form one group, None.

Memory stays bounded by the number of groups: timing is aggregated in chunks and the chunks' counts
combined, so a million-transcript run is summarised without holding its sessions.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipeline.checks.timing import TIMING_COUNTS, SessionTiming, TimingGroupReport, TimingThresholds, aggregate_timing
from pipeline.models.checks import ColumnValue
from pipeline.models.strict import StrictModel
from pipeline.outputs.cells import csv_cells
from pipeline.outputs.exports import ScoreRow, iter_score_rows, row_values
from pipeline.outputs.headings import summary_headings, yes_no
from pipeline.outputs.workbook import Style, write_table
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

GroupBy = Literal["agent", "shop", "platform", "day"]
GROUP_BY: tuple[GroupBy, ...] = ("agent", "shop", "platform", "day")
WEAKEST = 3
_CHUNK = 4096  # sessions aggregated at once per group


class WeakCriterion(StrictModel):
    """A criterion and its mean share of the maximum in a group."""

    criterion_id: str = Field(description="The criterion.")
    name: str = Field(description="The criterion's name in the rubric, which people read.")
    share: float = Field(ge=0, le=1, description="Mean score over the criterion's maximum.")


class GroupSummary(StrictModel):
    """One group's scores and service rates."""

    group: str | None = Field(description="The agent, shop, platform or day (ISO date); None when unknown.")
    transcripts: int = Field(ge=0, description="Distinct transcripts in the group.")
    rows: int = Field(ge=0, description="Rows (transcript × repeat) with a total.")
    mean_total: float | None = Field(description="Mean final total over those rows.")
    dimension_means: dict[str, float | None] = Field(description="Mean final points per dimension id.")
    weakest: list[WeakCriterion] = Field(description="The criteria with the lowest mean share of their maximum.")
    critical_failed: int = Field(ge=0, description="Rows failed by a critical item (致命项).")
    needs_review: int = Field(ge=0, description="Rows left out of the scores: the chat addresses the grader.")
    timing: TimingGroupReport | None = Field(description="Douyin-style rates; None without stored checks.")
    phrase_checked: int = Field(ge=0, description="Transcripts with checks and at least one agent reply.")
    banned_chats: int = Field(ge=0, description="Of those, transcripts with at least one banned phrase.")
    banned_rate: float | None = Field(description="Share of those with at least one banned phrase.")
    negation_refusal_rate: float | None = Field(description="Share of those with at least one 不-refusal.")

    def columns(self, by: GroupBy) -> dict[str, ColumnValue]:
        """Flat values for one CSV row; shares and means rounded to 4 decimals."""
        t = self.timing
        return {
            by: self.group,
            "transcripts": self.transcripts,
            "rows": self.rows,
            "mean_total": _round(self.mean_total),
            **{f"mean_{d}": _round(v) for d, v in self.dimension_means.items()},
            "weakest": "; ".join(f"{w.name} {w.share:.2f}" for w in self.weakest),
            "critical_failed": self.critical_failed,
            "needs_review": self.needs_review,
            "timing_sessions": t.sessions if t else 0,
            "not_measurable_sessions": t.not_measurable_sessions if t else 0,
            "first_reply_sessions": t.first_reply_sessions if t else 0,
            "first_replies_within": t.first_replies_within if t else 0,
            "first_reply_rate": _round(t.first_reply_rate) if t else None,
            "first_reply_pass": t.first_reply_pass if t else None,
            "reply_rate_basis": t.reply_rate_basis.value if t else None,
            "reply_rate_within": t.reply_rate_counts[0] if t else 0,
            "reply_rate_of": t.reply_rate_counts[1] if t else 0,
            "reply_rate": _round(t.reply_rate) if t else None,
            "reply_pass": t.reply_pass if t else None,
            "rated_sessions": t.rated_sessions if t else 0,
            "satisfied_sessions": t.satisfied_sessions if t else 0,
            "satisfaction_rate": _round(t.satisfaction_rate) if t else None,
            "satisfaction_pass": t.satisfaction_pass if t else None,
            "banned_rate": _round(self.banned_rate),
            "negation_refusal_rate": _round(self.negation_refusal_rate),
        }


def rate_text(part: int, whole: int, passed: bool | None) -> str:
    """A rate for people: '84.6% (11/13) ✗', or '—' when there was nothing to count.

    The percentage is cut, not rounded, to one decimal, so a failing rate never shows the threshold
    (11/13 = 0.8462 against 85 % reads 84.6 %, never 85 %), and the exact ratio stands beside it.
    """
    if not whole:
        return "—"
    per_mille = part * 1000 // whole
    verdict = "" if passed is None else " ✓" if passed else " ✗"
    return f"{per_mille // 10}.{per_mille % 10}% ({part}/{whole}){verdict}"


def _round(value: float | None) -> float | None:
    return round(value, 4) if value is not None else None


def _mean(total: float, n: int) -> float | None:
    return total / n if n else None


@dataclass
class _Group:
    """Running sums of one group."""

    transcripts: int = 0
    rows: int = 0
    total: float = 0.0
    critical_failed: int = 0
    needs_review: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    sessions: list[SessionTiming] = field(default_factory=list)
    timing_parts: list[TimingGroupReport] = field(default_factory=list)
    phrase_checked: int = 0
    banned: int = 0
    negation_refusal: int = 0

    def add(self, key: str, value: float | None) -> None:
        if value is not None:
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1

    def mean(self, key: str) -> float | None:
        return _mean(self.sums.get(key, 0.0), self.counts.get(key, 0))


def summarize_run(store: Store, rubric: Rubric, by: GroupBy,
                  thresholds: TimingThresholds | None = None) -> list[GroupSummary]:
    """One summary per group, sorted by group with the unknown group last."""
    return summarize_rows(iter_score_rows(store, rubric), rubric, by, thresholds)


def summarize_rows(rows: Iterable[ScoreRow], rubric: Rubric, by: GroupBy,
                   thresholds: TimingThresholds | None = None) -> list[GroupSummary]:
    """One summary per group of these score rows (grouped by transcript id, as `iter_score_rows` yields them)."""
    thresholds = thresholds or TimingThresholds()
    groups: dict[str | None, _Group] = {}
    last_id: str | None = None
    g = _Group()
    for row in rows:
        if row.transcript_id != last_id:  # the first repeat of a transcript
            last_id = row.transcript_id
            record = row.meta.get("checks") if row.meta else None
            session = _session(record)
            g = groups.setdefault(_group_key(row, session, by), _Group())
            _add_transcript(g, record, session, thresholds)
        values = row_values(row, rubric)
        if values["needs_review"]:
            g.needs_review += 1
            continue
        if values["total"] is not None:
            g.rows += 1
            g.total += values["total"]
        g.critical_failed += bool(values["critical_failed"])
        for d in rubric.dimensions:
            g.add(d.id, values[d.id])
        for c in rubric.criteria():
            g.add(c.id, None if values[c.id] is None else values[c.id] / c.max)
    order = sorted(groups, key=lambda k: (k is None, k or ""))
    return [_finish(k, groups[k], rubric, thresholds) for k in order]


def _session(record: dict[str, Any] | None) -> SessionTiming | None:
    if record is None:
        return None
    # The per-message lists are not needed for rates; leaving them out keeps validation cheap.
    slim = {k: v for k, v in record["timing"].items() if k not in ("message_waits", "bursts")}
    return SessionTiming.model_validate(slim)


def _group_key(row: ScoreRow, session: SessionTiming | None, by: GroupBy) -> str | None:
    meta = row.meta or {}
    if by == "agent":
        return (session.agent if session else None) or meta.get("agent_id")
    if by == "day":
        return session.day.isoformat() if session and session.day else None
    value = meta.get(by)
    return str(value) if value is not None else None


def _add_transcript(g: _Group, record: dict[str, Any] | None, session: SessionTiming | None,
                    thresholds: TimingThresholds) -> None:
    g.transcripts += 1
    if record is None or session is None:
        return
    # One identity for the whole group, so aggregate_timing returns exactly one report per chunk.
    g.sessions.append(session.model_copy(update={"agent": None, "shop": None, "day": None}))
    if len(g.sessions) >= _CHUNK:
        g.timing_parts.extend(aggregate_timing(g.sessions, thresholds))
        g.sessions.clear()
    phrases = record["phrases"]
    if phrases["agent_turns"]:
        g.phrase_checked += 1
        g.banned += phrases["counts"]["banned"] > 0
        g.negation_refusal += phrases["counts"]["negation_refusal"] > 0


def _finish(key: str | None, g: _Group, rubric: Rubric, thresholds: TimingThresholds) -> GroupSummary:
    parts = g.timing_parts + aggregate_timing(g.sessions, thresholds)
    shares = [(c, g.mean(c.id)) for c in rubric.criteria()]
    ranked = sorted(((c, s) for c, s in shares if s is not None), key=lambda item: item[1])
    return GroupSummary(
        group=key,
        transcripts=g.transcripts,
        rows=g.rows,
        mean_total=_mean(g.total, g.rows),
        dimension_means={d.id: g.mean(d.id) for d in rubric.dimensions},
        weakest=[WeakCriterion(criterion_id=c.id, name=c.name, share=s) for c, s in ranked[:WEAKEST]],
        critical_failed=g.critical_failed,
        needs_review=g.needs_review,
        timing=_combine(parts, thresholds) if parts else None,
        phrase_checked=g.phrase_checked,
        banned_chats=g.banned,
        banned_rate=_mean(g.banned, g.phrase_checked),
        negation_refusal_rate=_mean(g.negation_refusal, g.phrase_checked),
    )


def _combine(parts: list[TimingGroupReport], thresholds: TimingThresholds) -> TimingGroupReport:
    """Chunk reports of one group as one: counts add up; the rates are the same ratios of the sums."""
    if len(parts) == 1:
        return parts[0]
    return TimingGroupReport.of_counts(
        None, None, None, {name: sum(getattr(p, name) for p in parts) for name in TIMING_COUNTS}, thresholds
    )


def column_styles(keys: list[str]) -> list[Style | None]:
    """How a spreadsheet shows each summary column: rates as percentages, means with two decimals."""
    return [Style.percent if k.endswith("_rate") else Style.decimal if k.startswith("mean_") else None for k in keys]


def write_summary(groups: list[GroupSummary], rubric: Rubric, by: GroupBy, path: Path,
                  fmt: Literal["csv", "xlsx"], *, judge_note: str | None = None) -> Path:
    """Write the summaries under their Chinese headings (pipeline/outputs/headings.py) as CSV (UTF-8 with BOM,
    for Excel) or as one xlsx sheet headed by `judge_note`; no cell is a formula (pipeline/outputs/cells.py)."""
    names = summary_headings(rubric, by)
    columns = [g.columns(by) for g in groups]
    header = [names[k] for k in (columns[0] if columns else names)]
    rows = [[yes_no(v) if isinstance(v, bool) else v for v in c.values()] for c in columns]
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "xlsx":
        styles = column_styles(list(columns[0] if columns else names))
        return write_table(path, f"按{names[by]}汇总", header, rows, title=judge_note, styles=styles)
    with path.open("w", encoding="utf-8-sig", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(csv_cells(header))
        writer.writerows(csv_cells(r) for r in rows)
    return path


def transcript_groups(rows: Iterable[ScoreRow], by: GroupBy) -> dict[str, str | None]:
    """Each transcript's group, by the same rule as the summary (first row per transcript)."""
    groups: dict[str, str | None] = {}
    for row in rows:
        if row.transcript_id not in groups:
            record = row.meta.get("checks") if row.meta else None
            groups[row.transcript_id] = _group_key(row, _session(record), by)
    return groups
