"""The verdict anchored on the humans: uninformative and reversed judges never pass, a copy of a strong rater does;
the sentence; the message catalogue."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.agreement.baselines import BaselineAgreement
from pipeline.agreement.results import CI, HumanAgreement, Metrics, PairAgreement, RaterComparison
from pipeline.agreement.verdict import VerdictThresholds
from pipeline.consistency.assess import assess
from pipeline.consistency.results import CheckOptions, CriterionCheck
from pipeline.consistency.verdict import Reason, VerdictPolicy, judge_verdict, sentence
from pipeline.inputs.labels import Label, LabelSet
from pipeline.report.messages import catalogue
from pipeline.rubric.load import load_rubric

REPO = Path(__file__).resolve().parents[2]
CRITERIA = ("accomplishment", "satisfaction", "efficiency")


def _panel(seed: int = 1, n: int = 150, raters: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Five noisy raters (rounded N(0, 0.9) around the truth, most chats in the middle) and a strong sixth
    rater (N(0, 0.4)) who is not among the labels: the judge that is a copy of a strong rater."""
    rng = np.random.default_rng(seed)
    truth = rng.choice(5, n, p=[0.1, 0.2, 0.4, 0.2, 0.1])
    ratings = np.clip(truth[:, None] + np.rint(rng.normal(0, 0.9, (n, raters))), 0, 4)
    strong = np.clip(truth + np.rint(rng.normal(0, 0.4, n)), 0, 4)
    return ratings, strong


def _check(judge: np.ndarray, ratings: np.ndarray) -> CriterionCheck:
    units = [f"u{i:03d}" for i in range(len(judge))]
    labels = LabelSet(labels=[
        Label(transcript_id=u, criterion_id=c, score=int(ratings[i, j]), rater_id=f"r{j}")
        for c in CRITERIA for i, u in enumerate(units) for j in range(ratings.shape[1])
    ])
    scores = {u: {0: dict.fromkeys(CRITERIA, int(judge[i]))} for i, u in enumerate(units)}
    result, _ = assess(load_rubric(REPO / "rubric/dch1_quality.yaml"), labels, scores,
                       options=CheckOptions(n_resamples=200), repeats=1, model="m", rubric_path="r")
    return result.criteria[0]


RATINGS, STRONG = _panel()
JUDGES = {
    "constant": np.full(len(STRONG), 2.0),  # the humans' median level
    "prior": np.random.default_rng(3).choice(RATINGS.ravel(), len(STRONG)),  # draws from the humans' scores
    "reversed": 4 - STRONG,
}


@pytest.mark.parametrize("name", sorted(JUDGES))
def test_uninformative_and_reversed_judges_never_pass_nor_earn_trusted(name: str) -> None:
    c = _check(JUDGES[name], RATINGS)
    assert c.alt_test is not None and not c.alt_test.passed
    assert c.verdict == "not trusted"
    assert c.verdict_detail is not None and not c.verdict_detail.beats_baselines


def test_the_constant_judge_wins_the_per_chat_alignment_but_cannot_rank() -> None:
    # The paper's scoring alone: the constant judge sits nearer the noisy others than a rater does and wins
    # the majority of annotators (ω 0.6 here). The discrimination requirement is what fails it.
    alt = _check(JUDGES["constant"], RATINGS).alt_test
    assert alt is not None and alt.winning_rate >= 0.5
    assert math.isnan(alt.discrimination) and alt.discrimination_p == 1.0
    assert "rank" in (alt.reason or "") and "rank" in alt.rule


def test_a_copy_of_a_strong_rater_passes_and_is_trusted() -> None:
    c = _check(STRONG, RATINGS)
    assert c.alt_test is not None and c.alt_test.passed and c.alt_test.discrimination > 0.5
    assert c.verdict == "trusted"
    detail = c.verdict_detail
    assert detail is not None and detail.typical_rater is not None
    assert c.judge_vs_human.metrics.weighted_kappa.estimate > detail.typical_rater
    assert detail.sentence.startswith("与人工的一致性达到人工之间的中位水平")


def test_baselines_are_reported_beside_the_judge() -> None:
    c = _check(STRONG, RATINGS)
    by = {b.name: b for b in c.baselines}
    assert set(by) == {"constant", "prior"}
    # The constant judge's κw is exactly 0: observed disagreement equals chance disagreement when one side
    # never varies (every row of the confusion matrix but one is empty).
    assert by["constant"].agreement.metrics.weighted_kappa.estimate == pytest.approx(0.0)
    assert abs(by["prior"].agreement.metrics.weighted_kappa.estimate) < 0.2
    assert by["prior"].agreement.n == c.judge_vs_human.n


# --- the rule, on hand-made figures --------------------------------------------------------------


def _ci(estimate: float, low: float, high: float) -> CI:
    return CI(estimate=estimate, low=low, high=high, confidence=0.95, resamples=100, dropped=0)


def _pair(kappa: CI, bias: CI | None = None) -> PairAgreement:
    zero = _ci(0.0, 0.0, 0.0)
    fields = dict.fromkeys(Metrics.model_fields, zero) | {"weighted_kappa": kappa, "bias": bias or zero}
    return PairAgreement(n=100, levels=[0, 1, 2, 3, 4], metrics=Metrics[CI](**fields), confusion=[])


def _ceiling(*kappas: float) -> HumanAgreement:
    nan = dict.fromkeys(Metrics.model_fields, math.nan)
    comparisons = [RaterComparison(rater=f"r{i}", other="consensus", n=100,
                                       metrics=Metrics[float](**(nan | {"weighted_kappa": k})))
                   for i, k in enumerate(kappas)]
    return HumanAgreement(method="rater vs consensus", n_raters=len(kappas), mean=Metrics[float](**nan),
                             comparisons=comparisons)


def _baseline(kappa: float) -> BaselineAgreement:
    return BaselineAgreement(name="prior", rule="r", agreement=_pair(_ci(kappa, kappa - 0.1, kappa + 0.1)))


CEILING = _ceiling(0.3, 0.5, 0.6)  # typical (median) rater 0.5, lowest 0.3


@pytest.mark.parametrize(("kappa", "expected", "key"), [
    (_ci(0.55, 0.45, 0.65), "trusted", "reason.at_ceiling"),
    (_ci(0.45, 0.40, 0.50), "trusted", "reason.at_ceiling"),  # the interval reaches the typical rater
    (_ci(0.40, 0.35, 0.45), "review", "reason.below_typical"),
    (_ci(0.25, 0.15, 0.60), "review", "reason.below_typical"),  # interval reaches 0.5, estimate below 0.3
    (_ci(0.20, 0.10, 0.28), "not trusted", "reason.below_all"),
    (_ci(0.10, 0.02, 0.90), "not trusted", "reason.baseline"),  # no better than the prior judge's 0.12
    (_ci(nan := math.nan, nan, nan), "review", "reason.undefined"),
])
def test_the_rule_against_the_human_ceiling(kappa: CI, expected: str, key: str) -> None:
    v = judge_verdict(_pair(kappa), max_points=4, baselines=[_baseline(0.12)], ceiling=CEILING, self_kappa=nan,
                      alt_passed=None)
    assert v.verdict == expected and v.reasons[0].key == key
    assert v.typical_rater == 0.5 and v.lowest_rater == 0.3 and v.baseline == 0.12


def test_bias_alt_test_and_self_consistency_keep_a_judge_from_trusted() -> None:
    good = _ci(0.6, 0.5, 0.7)
    high = _ci(0.5, 0.3, 0.7)  # 0.5 points > 10% of 4, interval above 0
    biased = judge_verdict(_pair(good, high), max_points=4, baselines=[], ceiling=CEILING, self_kappa=0.9,
                           alt_passed=True)
    assert biased.verdict == "review"
    assert biased.sentence == "与人工的一致性达到人工之间的中位水平（加权κ 0.60，人工中位 0.50），但平均偏高 0.50 分"
    unsure = _ci(0.5, -0.1, 0.9)  # 0.5 points, but the interval includes 0: not held against the judge
    assert judge_verdict(_pair(good, unsure), max_points=4, baselines=[], ceiling=CEILING, self_kappa=0.9,
                         alt_passed=True).verdict == "trusted"
    failed = judge_verdict(_pair(good), max_points=4, baselines=[], ceiling=CEILING, self_kappa=0.4,
                           alt_passed=False)
    assert failed.verdict == "review" and [r.key for r in failed.reasons] == [
        "reason.at_ceiling", "reason.alt_failed", "reason.self_low"]


def test_one_rater_falls_back_to_the_configurable_thresholds() -> None:
    v = judge_verdict(_pair(_ci(0.7, 0.45, 0.9)), max_points=4, baselines=[], ceiling=None, self_kappa=nan,
                      alt_passed=None)
    assert v.verdict == "trusted" and v.reasons[0].key == "reason.absolute" and v.typical_rater is None
    strict = VerdictThresholds(trusted_estimate=0.8, trusted_low=0.6, not_trusted_below=0.75)
    v = judge_verdict(_pair(_ci(0.7, 0.45, 0.9)), max_points=4, baselines=[], ceiling=None, self_kappa=nan,
                      alt_passed=None, policy=VerdictPolicy(thresholds=strict))
    assert v.verdict == "not trusted"


def test_sentence_joins_and_renders_in_english() -> None:
    reasons = [Reason(key="reason.baseline", fields={"kappa": "0.00", "baseline": "0.00"}),
               Reason(key="reason.alt_failed", fields={})]
    assert sentence(reasons, contrast=False) == (
        "不比不看对话的评分更好：加权κ 0.00 未超过无信息评分的 0.00；另外替代标注员检验未通过")
    assert sentence(reasons, "en", contrast=False).endswith("; also, the alternative annotator test did not pass")


def test_every_language_has_every_message() -> None:
    zh, en = catalogue()["zh"], catalogue()["en"]
    assert set(zh) == set(en) and all(text.strip() for text in [*zh.values(), *en.values()])
