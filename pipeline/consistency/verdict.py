"""The per-criterion verdict: can the judge stand in for a human rater, and one sentence saying why.

One rule for the report, the console, `--fail-under` and the exit code, anchored on the humans:

1. **Beat the uninformative judges.** The judge's weighted kappa must exceed both baselines' point
   estimates (`pipeline.agreement.baselines`) and 0, or it is *not trusted*; and the lower end of its interval
   must too, or it is at most *review* (too few chats to tell it from a judge that never read them).
   An undefined kappa (every score the same) cannot be judged from numbers: *review*.
2. **Against the human ceiling** (two or more raters): each rater's weighted kappa against the others'
   consensus is a real person's figure on the same chats. *Not trusted* when the judge's whole interval
   lies below the lowest rater; *trusted* when its interval reaches the median ("typical") rater and its
   estimate is at least the lowest rater's; otherwise *review*. With one rater there is no ceiling and the
   absolute thresholds (`agreement.VerdictThresholds`, configurable) decide, as `agreement.verdict` says.
3. **Keep trusted honest.** A trusted judge drops to *review* when its mean bias is beyond
   `bias_share` of the criterion's maximum with an interval that excludes 0, when the alt-test ran and
   did not pass, or when it agrees with itself across repeats less than the typical rater agrees with
   the others (less than the trusted threshold with one rater).

The judge is compared with the consensus of all raters, each rater with the consensus of the others:
the judge's reference is one rater better, a small advantage the report states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from pipeline.agreement.baselines import BaselineAgreement
from pipeline.agreement.results import HumanAgreement, PairAgreement
from pipeline.agreement.verdict import DEFAULT_THRESHOLDS, Verdict, VerdictThresholds
from pipeline.agreement.verdict import verdict as kappa_verdict
from pipeline.models.strict import StrictModel
from pipeline.report.messages import Lang, Message, message, number

Reason = Message
"""One part of the verdict's sentence: a message id with its figures."""


class VerdictPolicy(StrictModel):
    """The configurable parts of the verdict."""

    thresholds: VerdictThresholds = Field(
        default=DEFAULT_THRESHOLDS, description="Absolute weighted-kappa thresholds, used with a single rater."
    )
    bias_share: float = Field(
        default=0.1, ge=0, description="Mean bias beyond this share of the criterion's maximum keeps it from trusted."
    )


DEFAULT_POLICY = VerdictPolicy()


class CriterionVerdict(StrictModel):
    """The verdict of one criterion, the figures it rests on and the sentence that explains it."""

    verdict: Verdict = Field(description="Trusted, review or not trusted.")
    sentence: str = Field(description="Why, in one Chinese sentence.")
    reasons: list[Reason] = Field(description="The sentence's parts, for rendering in another language.")
    contrast: bool = Field(description="The first reason is good news and the others qualify it ('but').")
    baseline: float = Field(description="The best uninformative judge's weighted kappa (at least 0).")
    beats_baselines: bool = Field(description="The judge's interval lies above every baseline.")
    typical_rater: float | None = Field(
        description="Median over raters of their weighted kappa against the others; None with one rater."
    )
    lowest_rater: float | None = Field(description="The lowest of those; None with one rater.")


def _f(value: float) -> str:
    return number(value)


def sentence(reasons: Sequence[Reason], lang: Lang = "zh", *, contrast: bool = True) -> str:
    """The reasons as one sentence: the first is the finding, the rest follow with "but" when they
    `contrast` with a good finding, with "and" when they add to a bad one."""
    parts = [message(r.key, lang, **r.fields) for r in reasons]
    head, rest = parts[0], parts[1:]
    joiner = message("join.but" if contrast else "join.also", lang)
    return head + (joiner + message("join.and", lang).join(rest) if rest else "")


def judge_verdict(
    pair: PairAgreement,
    *,
    max_points: float,
    baselines: Sequence[BaselineAgreement],
    ceiling: HumanAgreement | None,
    self_kappa: float,
    alt_passed: bool | None,
    policy: VerdictPolicy = DEFAULT_POLICY,
) -> CriterionVerdict:
    """The verdict of the module docstring's rule; `ceiling` is each rater against the others' consensus."""
    wk = pair.metrics.weighted_kappa
    kappa = _f(wk.estimate)
    found = [b.agreement.metrics.weighted_kappa.estimate for b in baselines]
    baseline = max([0.0, *(v for v in found if not math.isnan(v))])
    beats = wk.low > baseline  # False when NaN
    raters = [] if ceiling is None else [
        c.metrics.weighted_kappa for c in ceiling.comparisons if not math.isnan(c.metrics.weighted_kappa)
    ]
    typical = float(np.median(raters)) if raters else None
    lowest = min(raters) if raters else None
    reasons: list[Reason] = []
    if math.isnan(wk.estimate):  # e.g. every score on both sides the same: numbers cannot tell
        verdict: Verdict = "review"
        reasons.append(Reason(key="reason.undefined", fields={}))
    elif not wk.estimate > baseline:
        verdict = "not trusted"
        reasons.append(Reason(key="reason.baseline", fields={"kappa": kappa, "baseline": _f(baseline)}))
    elif typical is not None and lowest is not None:
        if wk.high < lowest:
            verdict = "not trusted"
            reasons.append(Reason(key="reason.below_all", fields={"kappa": kappa, "high": _f(wk.high),
                                                                  "lowest": _f(lowest)}))
        elif wk.high >= typical and wk.estimate >= lowest:
            verdict = "trusted"
            reasons.append(Reason(key="reason.at_ceiling", fields={"kappa": kappa, "typical": _f(typical)}))
        else:
            verdict = "review"
            reasons.append(Reason(key="reason.below_typical", fields={"kappa": kappa, "typical": _f(typical)}))
    else:
        verdict = kappa_verdict(wk, policy.thresholds)
        reasons.append(Reason(key="reason.absolute", fields={"kappa": kappa}))
    if not math.isnan(wk.estimate) and wk.estimate > baseline and not beats:
        verdict = "review" if verdict == "trusted" else verdict
        reasons.append(Reason(key="reason.baseline_unsure", fields={"low": _f(wk.low), "baseline": _f(baseline)}))
    buts = _buts(pair, max_points, self_kappa, alt_passed,
                 typical if typical is not None else policy.thresholds.trusted_estimate, policy)
    contrast = verdict == "trusted"
    if contrast and buts:
        verdict = "review"
    reasons += buts
    return CriterionVerdict(verdict=verdict, sentence=sentence(reasons, contrast=contrast), reasons=reasons,
                            contrast=contrast, baseline=baseline, beats_baselines=beats, typical_rater=typical,
                            lowest_rater=lowest)


def _buts(pair: PairAgreement, max_points: float, self_kappa: float, alt_passed: bool | None,
          self_floor: float, policy: VerdictPolicy) -> list[Reason]:
    """What keeps an otherwise trusted judge at review (and is worth saying of any judge)."""
    out = []
    bias = pair.metrics.bias
    if abs(bias.estimate) > policy.bias_share * max_points and (bias.low > 0 or bias.high < 0):
        key = "reason.bias_high" if bias.estimate > 0 else "reason.bias_low"
        out.append(Reason(key=key, fields={"bias": _f(abs(bias.estimate))}))
    if alt_passed is False:
        out.append(Reason(key="reason.alt_failed", fields={}))
    if self_kappa < self_floor:  # False when not measured (NaN)
        out.append(Reason(key="reason.self_low", fields={"self": _f(self_kappa), "floor": _f(self_floor)}))
    return out
