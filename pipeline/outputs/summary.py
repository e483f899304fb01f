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
  repeats, counted by `timing.session_counts` (as `timing.aggregate_timing` counts): 2分钟首次回复率,
  3分钟平均回复率 (per session by default, `TimingThresholds.reply_rate_basis`) and 满意度, each with
  its numerator, denominator and pass/fail against `TimingThresholds`. A transcript without checks
  adds to no rate.
- `banned_rate`: transcripts with at least one banned phrase over transcripts with checks and an
  agent reply; `negation_refusal_rate` likewise for 不-refusals.
- A transcript's group: agent = the checks' agent (Transcript.agent_id, else the speaker of the
  first agent turn), else the stored agent_id; shop and platform as stored; day = the date of the
  first customer message in the shop's zone (from the checks). Unknown values form one group, None.

The run is read as `pipeline.outputs.figures` reads it (the store's flat figures, final scores over
whole columns, then the reviewers' decisions), the same table the review overview filters and
summarises with `summarize_figures`: it holds one row per transcript × repeat (about 1 kB each).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import Field

from pipeline.checks.timing import TIMING_COUNTS, TimingGroupReport, TimingThresholds, session_counts
from pipeline.models.checks import ColumnValue
from pipeline.models.strict import StrictModel
from pipeline.outputs.cells import csv_cells
from pipeline.outputs.exports import load_decisions
from pipeline.outputs.figures import read_figures, with_decisions
from pipeline.outputs.headings import summary_headings, yes_no
from pipeline.outputs.workbook import Style, write_table
from pipeline.rubric.model import Dimension, Rubric
from pipeline.store.store import Store

GroupBy = Literal["agent", "shop", "platform", "day"]
GROUP_BY: tuple[GroupBy, ...] = ("agent", "shop", "platform", "day")
WEAKEST = 3


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


def summarize_run(store: Store, rubric: Rubric, by: GroupBy,
                  thresholds: TimingThresholds | None = None) -> list[GroupSummary]:
    """One summary per group, sorted by group with the unknown group last."""
    figures = with_decisions(read_figures(store, rubric), rubric, load_decisions(store))
    return summarize_figures(figures.rows, rubric, by, thresholds)


def summarize_figures(rows: pd.DataFrame, rubric: Rubric, by: GroupBy,
                      thresholds: TimingThresholds | None = None) -> list[GroupSummary]:
    """One summary per group of these rows (`RunFigures.rows`, or some of them: the review overview's filter),
    every sum taken for all groups at once."""
    thresholds = thresholds or TimingThresholds()
    key = rows[by].astype(object).where(rows[by].notna(), _UNKNOWN)
    review = rows["needs_review"].to_numpy(dtype=bool)
    trusted = ~review
    per_row = pd.DataFrame({"rows": trusted & rows["total"].notna().to_numpy(), "total": rows["total"].where(trusted),
                            "critical": trusted & rows["critical"].to_numpy(dtype=bool), "needs_review": review},
                           index=rows.index)
    for d in rubric.dimensions:
        per_row[f"d:{d.id}"] = _dimension_points(rows, d).where(trusted)
    for c in rubric.criteria():
        per_row[f"s:{c.id}"] = (rows[f"c:{c.id}"] / c.max).where(trusted)
    by_row = per_row.groupby(key, sort=False)
    sums, counts = by_row.sum(), by_row.count()

    first = ~rows["transcript_id"].duplicated().to_numpy()  # a transcript's checks count once whatever its repeats
    chats = rows[first]
    checked = chats["has_checks"].to_numpy(dtype=bool)
    phrases = checked & (chats["agent_turns"].fillna(0).to_numpy() > 0)
    per_chat = session_counts(chats, thresholds).mul(checked, axis=0)
    per_chat["transcripts"] = 1
    per_chat["checked"] = checked
    per_chat["phrase_checked"] = phrases
    per_chat["banned"] = phrases & (chats["banned"].fillna(0).to_numpy() > 0)
    per_chat["negation_refusal"] = phrases & (chats["negation_refusal"].fillna(0).to_numpy() > 0)
    chat_sums = per_chat.groupby(key[first], sort=False).sum()

    order = sorted(chat_sums.index, key=lambda k: (k is _UNKNOWN, "" if k is _UNKNOWN else str(k)))
    return [_group_summary(None if k is _UNKNOWN else str(k), sums.loc[k], counts.loc[k], chat_sums.loc[k], rubric,
                           thresholds) for k in order]


_UNKNOWN = object()
"""The group of rows whose value is unknown (sorted last, shown as None)."""


def _group_summary(key: str | None, sums: pd.Series, counts: pd.Series, chats: pd.Series, rubric: Rubric,
                   thresholds: TimingThresholds) -> GroupSummary:
    def mean(name: str) -> float | None:
        return float(sums[name] / counts[name]) if counts[name] else None

    shares = [(c, mean(f"s:{c.id}")) for c in rubric.criteria()]
    ranked = sorted(((c, s) for c, s in shares if s is not None), key=lambda item: item[1])
    phrase_checked = int(chats["phrase_checked"])
    return GroupSummary(
        group=key,
        transcripts=int(chats["transcripts"]),
        rows=int(sums["rows"]),
        mean_total=mean("total"),
        dimension_means={d.id: mean(f"d:{d.id}") for d in rubric.dimensions},
        weakest=[WeakCriterion(criterion_id=c.id, name=c.name, share=s) for c, s in ranked[:WEAKEST]],
        critical_failed=int(sums["critical"]),
        needs_review=int(sums["needs_review"]),
        timing=TimingGroupReport.of_counts(None, None, None, {k: int(chats[k]) for k in TIMING_COUNTS}, thresholds)
        if chats["checked"] else None,
        phrase_checked=phrase_checked,
        banned_chats=int(chats["banned"]),
        banned_rate=int(chats["banned"]) / phrase_checked if phrase_checked else None,
        negation_refusal_rate=int(chats["negation_refusal"]) / phrase_checked if phrase_checked else None,
    )


def _dimension_points(rows: pd.DataFrame, dimension: Dimension) -> pd.Series:
    """A dimension's final points per row: the sum of its criteria, NaN when one is unscored."""
    points = rows[[f"c:{c.id}" for g in dimension.groups for c in g.criteria]]
    return points.sum(axis=1).where(points.notna().all(axis=1))


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


def transcript_groups(store: Store, rubric: Rubric, by: GroupBy) -> dict[str, str | None]:
    """Each transcript's group, by the same rule as the summary."""
    chats = read_figures(store, rubric).rows.drop_duplicates("transcript_id")
    return {tid: None if pd.isna(key) else str(key) for tid, key in zip(chats["transcript_id"], chats[by], strict=True)}
