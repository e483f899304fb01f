"""Whether a check has enough labelled chats to support a verdict, and what its report says when it has not.

Three chats can show the pipeline working, but no interval on three chats says anything about a
judge: a weighted κ of 1.0 on three chats is luck as often as skill, and an ICC(A,1) from three
totals can come out below −1, outside the range the coefficient is meant to have. Koo & Li (2016,
J Chiropr Med 15:155) ask for at least 30 heterogeneous samples for a reliability study; below the
minimum the report says so first, gives no verdict and shows no ICC.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the statistics load at a report, not when `kefu` starts
    from pipeline.agreement.results import PairAgreement

MIN_LABELLED = 30
"""Labelled chats with a judge grade below which a check gives no verdict (Koo & Li 2016: at least 30)."""

TOO_FEW = "样本太少 (too few)"
"""What the verdict column shows instead of a verdict below the minimum."""


class SampleSize(BaseModel):
    """How many labelled chats a check compared, against the minimum a verdict needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(ge=0, description="Labelled chats with a judge grade.")
    minimum: int = Field(ge=1, description="The fewest for a verdict.")

    @property
    def enough(self) -> bool:
        """Whether the verdicts and the ICC may be shown."""
        return self.n >= self.minimum

    @property
    def notice(self) -> str | None:
        """The report's first words when the sample is too small; None when it is not."""
        if self.enough:
            return None
        return (f"只有 {self.n} 个带标注的对话，少于 {self.minimum} 个：这次检查不能说明评分模型是否可信，"
                "下面不给出结论，ICC 不计；数字只说明流程跑通了。"
                f"(only {self.n} labelled chats, fewer than {self.minimum}: no verdict is given and no ICC is "
                "shown; the numbers only show the pipeline working.)")

    def verdict(self, verdict: str | None) -> str | None:
        """The verdict to show: none below the minimum (`TOO_FEW`), else the check's own."""
        if verdict is not None and not self.enough:
            return TOO_FEW
        return verdict

    def icc_reason(self, reason: str | None) -> str | None:
        """Why the ICC is not shown: the statistic's own reason, else the sample's."""
        if reason is not None or self.enough:
            return reason
        return (f"只有 {self.n} 个对话，少于 {self.minimum}：ICC 在这么小的样本上没有意义，可能落在 −1 以下 "
                f"(n={self.n} < {self.minimum}: meaningless on so few chats, it can fall below −1)")


def kappa_reason(pair: PairAgreement) -> str | None:
    """Why the weighted κ is not shown: undefined (the statistic's reason), or defined but meaningless because one
    side used a single level: κ is then 0 whatever the other side did, which reads as "no agreement" when
    nothing could have been measured."""
    reason = pair.metrics.weighted_kappa.reason
    if reason is not None:
        return reason
    judge_levels = sum(1 for row in pair.confusion if any(row))
    human_levels = sum(1 for column in zip(*pair.confusion, strict=True) if any(column))
    if pair.n and human_levels == 1:
        return "人工评分只用了一个等级，κ 在这里没有意义 (the humans used one level only: κ means nothing here)"
    if pair.n and judge_levels == 1:
        return "评分模型只给了一个等级，κ 在这里没有意义 (the judge used one level only: κ means nothing here)"
    return None
