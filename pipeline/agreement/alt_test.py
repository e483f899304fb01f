"""The Alternative Annotator Test (Calderon, Reichart & Dror, ACL 2025): may the judge replace an annotator."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.agreement.levels import FloatArray, rater_columns, ratings_matrix
from pipeline.agreement.reasons import reason
from pipeline.agreement.results import Result


class AnnotatorTest(Result):
    """The alt-test for one left-out human annotator."""

    rater: str = Field(description="The left-out annotator.")
    n_units: int = Field(
        description="Units scored by this annotator, the judge and at least one other annotator."
    )
    llm_advantage: float = Field(
        description="Share of those units where the judge aligns with the others at least as well."
    )
    human_advantage: float = Field(
        description="Share where the annotator aligns with the others at least as well."
    )
    p_value: float = Field(description="One-sided paired t-test of H0: llm_advantage ≤ human_advantage − ε.")
    p_adjusted: float = Field(description="p_value after Benjamini–Yekutieli correction across annotators.")
    won: bool = Field(description="The judge wins: H0 rejected at the FDR level after correction.")


ALT_TEST_RULE = (
    "Calderon, Reichart & Dror (ACL 2025) with the paper's scoring of alignment per chat, plus one requirement "
    "of ours: the judge must also rank the chats like the annotators (Spearman with their mean above 0 at "
    "the FDR level q). Per-chat alignment rewards a prediction near the centre when annotators disagree "
    "within a chat more than chats differ, so a constant judge can win every annotator; it cannot rank."
)


class AltTestResult(Result):
    """The Alternative Annotator Test (Calderon, Reichart & Dror, ACL 2025) for one criterion."""

    alignment: Literal["neg_rmse", "accuracy"] = Field(
        description="How alignment with the other annotators is scored."
    )
    epsilon: float = Field(description="Cost-benefit margin ε granted to the judge.")
    q: float = Field(description="FDR level of the Benjamini–Yekutieli correction.")
    annotators: list[AnnotatorTest] = Field(description="One test per annotator with enough units.")
    skipped: dict[str, str] = Field(description="Annotators left out of the test, with the reason.")
    winning_rate: float = Field(
        description="ω: share of tested annotators the judge wins against; NaN if none."
    )
    advantage_probability: float = Field(description="ρ: mean over tested annotators of llm_advantage.")
    discrimination: float = Field(
        description="Spearman of the judge with the annotators' mean over the units it scored; NaN if constant."
    )
    discrimination_p: float = Field(
        description="One-sided p of H0: discrimination ≤ 0 (scipy.stats.spearmanr); 1 when undefined."
    )
    rule: str = Field(default=ALT_TEST_RULE, description="When the test passes, and why, with its reference.")
    passed: bool = Field(
        description="ω ≥ 0.5 over at least three tested annotators and discrimination_p < q: the judge "
        "may replace one."
    )
    reason: str | None = Field(
        default=None, description="Why the test could not pass regardless of ω, if so."
    )


def _alignment(pred: FloatArray, others: FloatArray, how: Literal["neg_rmse", "accuracy"]) -> FloatArray:
    """Per unit, how well `pred` matches the other annotators' scores (higher is better; NaN = missing)."""
    present = ~np.isnan(others)
    count = present.sum(axis=1)
    if how == "accuracy":
        return np.asarray(np.sum((others == pred[:, None]) & present, axis=1) / count, dtype=np.float64)
    squared = np.where(present, (others - pred[:, None]) ** 2, 0.0)
    return np.asarray(-np.sqrt(squared.sum(axis=1) / count), dtype=np.float64)


def _one_sided_p(d: FloatArray, epsilon: float) -> float:
    """p of H0: mean(d) ≥ ε against H1: mean(d) < ε (d = human wins − judge wins per unit)."""
    if np.ptp(d) == 0:  # no variance: the sign of the gap is certain, the t statistic is ±inf
        return 0.0 if d[0] < epsilon else 1.0
    from scipy import stats

    return float(stats.ttest_1samp(d, popmean=epsilon, alternative="less").pvalue)


def alt_test(
    llm: npt.ArrayLike,
    ratings: npt.ArrayLike,
    *,
    rater_ids: Sequence[str] | None = None,
    epsilon: float = 0.2,
    q: float = 0.05,
    alignment: Literal["neg_rmse", "accuracy"] = "neg_rmse",
    min_units: int = 30,
) -> AltTestResult:
    """Whether the judge can replace a human annotator: the alt-test of Calderon, Reichart & Dror (ACL 2025).

    For each annotator j: on the units j, the judge and at least one other annotator scored, score the
    alignment of the judge and of j with the remaining annotators; W_f = [judge ≥ j], W_h = [j ≥ judge]
    (ties count for both). The judge wins against j when a one-sided paired t-test rejects
    H0: mean(W_f) ≤ mean(W_h) − ε, after Benjamini–Yekutieli correction at level q across annotators.
    ω is the share of annotators won, ρ the mean of mean(W_f); the judge passes when ω ≥ 0.5 and it
    ranks the chats like the annotators (`ALT_TEST_RULE`: per-chat alignment alone lets a constant pass).

    Alignment, as in the paper's reference code: "neg_rmse" = −√mean_k (s − h_k)² over the other
    annotators k (for scores on a scale, the default), "accuracy" = share of the others with the same
    score (for nominal labels). ε = 0.2 is the paper's suggestion for expert annotators. Annotators
    with fewer than `min_units` units are skipped (the paper recommends 50–100 units); the test needs
    at least three tested annotators to pass.
    """
    if min_units < 2:
        raise ValueError("min_units must be at least 2 for a t-test")
    m = ratings_matrix(ratings)
    judge = np.asarray(llm, dtype=np.float64).ravel()
    if judge.size != m.shape[0]:
        raise ValueError(f"{judge.size} judge scores for {m.shape[0]} units")
    ids = rater_columns(m, rater_ids)
    tested: list[tuple[str, int, float, float, float]] = []
    skipped: dict[str, str] = {}
    for j, rater in enumerate(ids):
        others = np.delete(m, j, axis=1)
        units = ~np.isnan(judge) & ~np.isnan(m[:, j]) & np.any(~np.isnan(others), axis=1)
        n_units = int(units.sum())
        if n_units < min_units:
            skipped[rater] = (
                f"{n_units} units shared with the judge and another annotator, fewer than {min_units}"
            )
            continue
        s_llm = _alignment(judge[units], others[units], alignment)
        s_human = _alignment(m[units, j], others[units], alignment)
        w_llm = (s_llm >= s_human).astype(np.float64)
        w_human = (s_human >= s_llm).astype(np.float64)
        p = _one_sided_p(w_human - w_llm, epsilon)
        tested.append((rater, n_units, float(w_llm.mean()), float(w_human.mean()), p))
    rho, rho_p = _discrimination(judge, m)
    if tested:
        from statsmodels.stats.multitest import multipletests

        won, adjusted, _, _ = multipletests([t[4] for t in tested], alpha=q, method="fdr_by")
    else:
        won, adjusted = np.array([], dtype=bool), np.array([])
    annotators = [
        AnnotatorTest(
            rater=rater,
            n_units=n_units,
            llm_advantage=adv_llm,
            human_advantage=adv_human,
            p_value=p,
            p_adjusted=float(p_adj),
            won=bool(w),
        )
        for (rater, n_units, adv_llm, adv_human, p), p_adj, w in zip(tested, adjusted, won, strict=True)
    ]
    omega = float(np.mean(won)) if annotators else math.nan
    advantage = float(np.mean([a.llm_advantage for a in annotators])) if annotators else math.nan
    enough = len(annotators) >= 3
    ranks = rho_p < q
    why = None
    if not enough:
        why = reason("alt_few", min_units=min_units, n=len(annotators))
    elif not ranks:
        why = reason("alt_rank", rho=f"{rho:.2f}", p=f"{rho_p:.3f}")
    return AltTestResult(
        alignment=alignment,
        epsilon=epsilon,
        q=q,
        annotators=annotators,
        skipped=skipped,
        winning_rate=omega,
        advantage_probability=advantage,
        discrimination=rho,
        discrimination_p=rho_p,
        passed=enough and ranks and omega >= 0.5,
        reason=why,
    )


def _discrimination(judge: FloatArray, m: FloatArray) -> tuple[float, float]:
    """Spearman of the judge with the annotators' mean, and its one-sided p against "no better than 0"."""
    scored = ~np.isnan(judge) & np.any(~np.isnan(m), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(m[scored], axis=1)
    x = judge[scored]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(mean) == 0:
        return math.nan, 1.0
    from scipy import stats

    result = stats.spearmanr(x, mean, alternative="greater")
    return float(result.statistic), float(result.pvalue)
