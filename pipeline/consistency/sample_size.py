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

from pipeline.report.messages import Lang, message, reason_text

if TYPE_CHECKING:  # the statistics load at a report, not when `kefu` starts
    from pipeline.agreement.results import PairAgreement

MIN_LABELLED = 30
"""Labelled chats with a judge grade below which a check gives no verdict (Koo & Li 2016: at least 30)."""

TOO_FEW = "too few"
"""What `SampleSize.verdict` gives instead of a verdict below the minimum (shown as message verdict.too_few)."""


class SampleSize(BaseModel):
    """How many labelled chats a check compared, against the minimum a verdict needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n: int = Field(ge=0, description="Labelled chats with a judge grade.")
    minimum: int = Field(ge=1, description="The fewest for a verdict.")

    @property
    def enough(self) -> bool:
        """Whether the verdicts and the ICC may be shown."""
        return self.n >= self.minimum

    def notice(self, lang: Lang = "zh") -> str | None:
        """The report's first words when the sample is too small; None when it is not."""
        return None if self.enough else message("sample.notice", lang, n=self.n, minimum=self.minimum)

    def verdict(self, verdict: str | None) -> str | None:
        """The verdict to show: none below the minimum (`TOO_FEW`), else the check's own."""
        if verdict is not None and not self.enough:
            return TOO_FEW
        return verdict

    def icc_reason(self, reason: str | None, lang: Lang = "zh") -> str | None:
        """Why the ICC is not shown: the statistic's own reason, else the sample's."""
        if reason is not None:
            return reason_text(reason, lang)
        return None if self.enough else message("sample.icc", lang, n=self.n, minimum=self.minimum)


def kappa_reason(pair: PairAgreement, lang: Lang = "zh") -> str | None:
    """Why the weighted κ is not shown: undefined (the statistic's reason), or defined but meaningless because one
    side used a single level: κ is then 0 whatever the other side did, which reads as "no agreement" when
    nothing could have been measured."""
    reason = pair.metrics.weighted_kappa.reason
    if reason is not None:
        return reason_text(reason, lang)
    judge_levels = sum(1 for row in pair.confusion if any(row))
    human_levels = sum(1 for column in zip(*pair.confusion, strict=True) if any(column))
    if pair.n and human_levels == 1:
        return message("sample.human_one_level", lang)
    if pair.n and judge_levels == 1:
        return message("sample.judge_one_level", lang)
    return None
