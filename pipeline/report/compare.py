"""A check against a previous one: per criterion and sum, how each metric moved and whether beyond its interval.

"Changed more than its interval" (`--compare`): a metric's change |Δ| = |now − before| is marked when
it exceeds the half-width of the *current* 95% interval, i.e. when the previous point estimate lies
outside the current interval. Whether the two intervals overlap is shown as well; non-overlapping
intervals are the stricter sign (roughly p < 0.01 for two independent samples).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipeline.agreement.results import CI, PairAgreement
from pipeline.consistency.results import CheckResult
from pipeline.grading.fingerprint import fingerprint_differences
from pipeline.models.strict import StrictModel

CHANGE_METRICS = ("weighted_kappa", "exact", "alpha_ordinal", "spearman", "mae", "bias")
"""The metrics whose change since a previous check `kefu report --compare` shows."""
CHANGE_RULE = (
    "a change is marked when |Δ| exceeds the half-width of the current interval (the previous estimate "
    "lies outside it); 'overlap' says whether the two intervals overlap"
)


Kind = Literal["criterion", "group", "dimension", "total"]


class MetricChange(StrictModel):
    """One metric of one criterion or sum, before and now."""

    metric: str = Field(description="Metric name, as in agreement.Metrics.")
    before: float = Field(description="The previous point estimate.")
    now: float = Field(description="The current point estimate.")
    delta: float = Field(description="now − before.")
    half_width: float = Field(description="Half the width of the current interval.")
    beyond_ci: bool = Field(description="|delta| > half_width: the change is larger than its interval.")
    cis_overlap: bool = Field(description="The previous and current intervals overlap.")


class ItemChange(StrictModel):
    """The changes of one criterion or sum."""

    item_id: str = Field(description="Criterion, group or dimension id, or 'total'.")
    kind: Kind = Field(description="What the item is.")
    verdict_before: str | None = Field(description="The previous verdict (criteria only).")
    verdict_now: str | None = Field(description="The current verdict (criteria only).")
    changes: list[MetricChange] = Field(description="One entry per compared metric.")


class ResultComparison(StrictModel):
    """The current check against a previous one, item by item."""

    previous_created_at: str = Field(description="When the previous check was computed.")
    previous_model: str = Field(description="The previous judge model.")
    previous_rubric: str = Field(description="The previous rubric id and version.")
    same_rubric: bool = Field(description="The rubric content is unchanged.")
    judge_changes: list[str] = Field(
        default=[], description="How the judge differs from the previous check's (fingerprint), in words; empty: same."
    )
    rule: str = Field(default=CHANGE_RULE, description="When a change is marked.")
    items: list[ItemChange] = Field(description="Items present in both checks, current order.")
    only_now: list[str] = Field(description="Items only the current check has.")
    only_before: list[str] = Field(description="Items only the previous check has.")


def _metric_change(name: str, before: CI, now: CI) -> MetricChange:
    delta = now.estimate - before.estimate
    half = (now.high - now.low) / 2
    return MetricChange(
        metric=name, before=before.estimate, now=now.estimate, delta=delta, half_width=half,
        beyond_ci=bool(abs(delta) > half),  # False whenever a NaN is involved
        cis_overlap=not (now.low > before.high or now.high < before.low),
    )


def _items(result: CheckResult) -> dict[str, tuple[Kind, PairAgreement, str | None]]:
    items: dict[str, tuple[Kind, PairAgreement, str | None]] = {
        c.criterion_id: ("criterion", c.judge_vs_human, c.verdict) for c in result.criteria
    }
    items.update({s.sum_id: (s.kind, s.judge_vs_human, None) for s in result.sums})
    return items


def compare_results(current: CheckResult, previous: CheckResult) -> ResultComparison:
    """Per criterion and sum, each compared metric before and now, marked when it moved beyond its interval."""
    now, before = _items(current), _items(previous)
    changes = []
    for item_id, (kind, pair, verdict) in now.items():
        if item_id not in before:
            continue
        _, old, old_verdict = before[item_id]
        changes.append(ItemChange(
            item_id=item_id, kind=kind, verdict_before=old_verdict, verdict_now=verdict,
            changes=[_metric_change(m, getattr(old.metrics, m), getattr(pair.metrics, m)) for m in CHANGE_METRICS],
        ))
    return ResultComparison(
        previous_created_at=previous.created_at.isoformat(), previous_model=previous.model,
        previous_rubric=f"{previous.rubric_id} v{previous.rubric_version}",
        same_rubric=previous.rubric_hash == current.rubric_hash, items=changes,
        judge_changes=_judge_changes(previous, current),
        only_now=[i for i in now if i not in before], only_before=[i for i in before if i not in now],
    )


def _judge_changes(previous: CheckResult, current: CheckResult) -> list[str]:
    if previous.judge is None or current.judge is None:
        return [] if previous.model == current.model else [f"模型：{previous.model} → {current.model}"]
    return fingerprint_differences(previous.judge, current.judge)
