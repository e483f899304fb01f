"""The verdict on a judge from its weighted kappa: trusted, review or not trusted, and where it changes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipeline.agreement.results import CI, Result


class VerdictThresholds(Result):
    """Where the weighted-kappa verdict changes; configurable per project."""

    trusted_estimate: float = Field(
        default=0.6, description="Trusted needs the point estimate at least this."
    )
    trusted_low: float = Field(default=0.4, description="…and the interval's lower end at least this.")
    not_trusted_below: float = Field(
        default=0.4, description="Not trusted when the point estimate is below this."
    )

    @model_validator(mode="after")
    def _ordered(self) -> VerdictThresholds:
        if self.not_trusted_below > self.trusted_estimate:
            raise ValueError("not_trusted_below must not exceed trusted_estimate")
        return self


Verdict = Literal["trusted", "review", "not trusted"]
DEFAULT_THRESHOLDS = VerdictThresholds()


def verdict(weighted_kappa: CI, thresholds: VerdictThresholds = DEFAULT_THRESHOLDS) -> Verdict:
    """Trusted, review or not trusted, from the weighted kappa and its interval.

    An undefined kappa (NaN, e.g. every score the same) cannot be judged from numbers, so it is "review".
    """
    if (
        weighted_kappa.estimate >= thresholds.trusted_estimate
        and weighted_kappa.low >= thresholds.trusted_low
    ):
        return "trusted"
    if weighted_kappa.estimate < thresholds.not_trusted_below:
        return "not trusted"
    return "review"
