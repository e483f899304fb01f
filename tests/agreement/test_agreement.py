"""Agreement statistics: hand-derived values, degenerate inputs, the bootstrap, the alt-test, the verdict."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pydantic import ValidationError

from pipeline.agreement.alpha import krippendorff_alpha, unchecked_alpha
from pipeline.agreement.alt_test import alt_test
from pipeline.agreement.bootstrap import bootstrap_ci
from pipeline.agreement.compare import compare_scores
from pipeline.agreement.correlation import kendall, spearman
from pipeline.agreement.counts import adjacent_agreement, confusion, exact_agreement
from pipeline.agreement.differences import mean_absolute_error, mean_bias
from pipeline.agreement.icc import icc_totals
from pipeline.agreement.kappa import cohen_kappa, weighted_kappa
from pipeline.agreement.raters import consensus_levels, pairwise_human_agreement, rater_vs_consensus
from pipeline.agreement.results import CI, CONSENSUS_RULE, Metrics
from pipeline.agreement.verdict import VerdictThresholds, verdict

nan = math.nan

# The kappa example used below. Levels 0 < 1 < 2, six transcripts.
#   judge  0 0 1 1 2 2
#   human  0 1 1 2 2 2
# Confusion (rows judge, columns human): [[1,1,0],[0,1,1],[0,0,2]].
JUDGE = [0, 0, 1, 1, 2, 2]
HUMAN = [0, 1, 1, 2, 2, 2]


def test_cohen_kappa_by_hand() -> None:
    # po = (1+1+2)/6 = 2/3. Judge marginals 2,2,2; human 1,2,3; pe = (2·1 + 2·2 + 2·3)/36 = 1/3.
    # κ = (po − pe)/(1 − pe) = (1/3)/(2/3) = 0.5
    assert cohen_kappa(JUDGE, HUMAN, [0, 1, 2]) == pytest.approx(0.5)


def test_quadratic_weighted_kappa_by_hand() -> None:
    # Disagreement weights w_ij = (i − j)². Observed: cells (0,1) and (1,2), weight 1 each: Σ w·p = 2/6 = 1/3.
    # Expected: judge proportions r = 1/3 each, human c = 1/6, 2/6, 3/6.
    #   Σ_ij w_ij r_i c_j = (1/3)·Σ_j c_j·Σ_i (i−j)² = (1/3)·(5/6 + 2·2/6 + 5·3/6) = (1/3)·4 = 4/3.
    # κ_w = 1 − (1/3)/(4/3) = 0.75
    assert weighted_kappa(JUDGE, HUMAN, [0, 1, 2]) == pytest.approx(0.75)


def test_weighted_kappa_weights_level_order_not_points() -> None:
    # Same index pattern on levels 0/3/5: weights must still be (Δ level)², so κ_w is again 0.75.
    # Weighting by points instead ((0−3)² = 9, (3−5)² = 4, (0−5)² = 25) would give
    #   observed (9 + 4)/6 = 13/6, expected (1/3)(34/6 + 2·13/6 + 3·29/6) = 147/18, κ_w = 1 − 39/147 ≈ 0.735.
    to_points = {0: 0, 1: 3, 2: 5}
    judge = [to_points[s] for s in JUDGE]
    human = [to_points[s] for s in HUMAN]
    assert weighted_kappa(judge, human, [0, 3, 5]) == pytest.approx(0.75)
    assert cohen_kappa(judge, human, [0, 3, 5]) == pytest.approx(0.5)


def test_exact_adjacent_and_confusion() -> None:
    assert exact_agreement(JUDGE, HUMAN) == pytest.approx(4 / 6)
    assert confusion(JUDGE, HUMAN, [0, 1, 2]).tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 2]]
    # Adjacent means one LEVEL apart: on 0/3/5, 0–3 and 3–5 are adjacent (index gap 1), 0–5 and 5–0 are not.
    assert adjacent_agreement([0, 0, 3, 5], [3, 5, 5, 0], [0, 3, 5]) == pytest.approx(0.5)
    assert exact_agreement([0, 0, 3, 5], [3, 5, 5, 0]) == 0.0


def test_mae_and_bias_by_hand() -> None:
    # judge − human = 0−3, 3−3, 5−0 = −3, 0, 5: MAE = 8/3, bias = 2/3
    assert mean_absolute_error([0, 3, 5], [3, 3, 0]) == pytest.approx(8 / 3)
    assert mean_bias([0, 3, 5], [3, 3, 0]) == pytest.approx(2 / 3)


def test_spearman_and_kendall_by_hand() -> None:
    # No ties: a = 1 2 3 4, b = 1 3 2 4. d = 0 −1 1 0, Σd² = 2, ρ = 1 − 6·2/(4·15) = 0.8.
    # Pairs: 6, only (2,3) discordant: τ = (5 − 1)/6 = 2/3.
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert kendall([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(2 / 3)
    # Ties: a = 0 0 1 2 (ranks 1.5 1.5 3 4), b = 0 1 1 2 (ranks 1 2.5 2.5 4); mean rank 2.5.
    # Deviations a: −1 −1 .5 1.5, b: −1.5 0 0 1.5. ρ = 3.75 / √(4.5·4.5) = 0.8333…
    # τ_b: concordant 4, discordant 0, ties in a 1, ties in b 1: 4/√((6−1)(6−1)) = 0.8
    assert spearman([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx(3.75 / 4.5)
    assert kendall([0, 0, 1, 2], [0, 1, 1, 2]) == pytest.approx(0.8)


# Tiny reliability data, units × raters: (1,1), (2,2), (3,2), plus a unit only one rater scored.
TINY: list[list[float]] = [[1, 1], [2, 2], [3, 2], [3, nan]]


def test_krippendorff_interval_by_hand() -> None:
    # Coincidences o_11 = 2, o_22 = 2, o_23 = o_32 = 1; the single-score unit is not pairable.
    # n_1 = 2, n_2 = 3, n_3 = 1, n = 6. Interval δ² = (c − k)².
    # Σ o·δ² = 2·1 = 2. Σ n_c n_k δ² over ordered pairs = 2·(2·3·1 + 2·1·4 + 3·1·1) = 34.
    # α = 1 − (n − 1)·Σ o δ² / Σ n_c n_k δ² = 1 − 5·2/34 = 24/34
    assert krippendorff_alpha(TINY, [1, 2, 3], "interval") == pytest.approx(24 / 34)


def test_krippendorff_ordinal_by_hand() -> None:
    # Ordinal δ_ck = Σ_{g=c..k} n_g − (n_c + n_k)/2: δ_12 = 2.5, δ_23 = 2, δ_13 = 4.5.
    # Σ o·δ² = 2·4 = 8. Σ n_c n_k δ² = 2·(2·3·6.25 + 2·1·20.25 + 3·1·4) = 180. α = 1 − 5·8/180 = 7/9
    assert krippendorff_alpha(TINY, [1, 2, 3], "ordinal") == pytest.approx(7 / 9)
    # An unobserved extra level changes nothing: it has no values between the observed ones.
    assert krippendorff_alpha(TINY, [1, 2, 3, 4], "ordinal") == pytest.approx(7 / 9)


def test_krippendorff_published_example() -> None:
    # Krippendorff (2011) "Computing Krippendorff's Alpha-Reliability", 4 observers × 12 units with missing
    # values; the paper gives nominal 0.743, ordinal 0.815, interval 0.849. Here as units × raters.
    observers = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, nan, nan, nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, nan, 3],
            [nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, nan],
        ]
    )
    levels = [1, 2, 3, 4, 5]
    assert krippendorff_alpha(observers.T, levels, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(observers.T, levels, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(observers.T, levels, "interval") == pytest.approx(0.849, abs=5e-4)


def test_icc_by_hand() -> None:
    # judge 1 3 5, human 2 3 7; grand mean 3.5; unit means 1.5 3 6; rater means 3 4.
    # SS_units = 2·(4 + .25 + 6.25) = 21, MS_R = 10.5; SS_raters = 3·(.25 + .25) = 1.5, MS_C = 1.5;
    # SS_total = 23.5, SS_error = 1, MS_E = 1/2.
    # ICC(A,1) = (MS_R − MS_E)/(MS_R + (k−1)MS_E + k(MS_C − MS_E)/n) = 10/(11 + 2/3) = 6/7
    icc = icc_totals([1, 3, 5], [2, 3, 7])
    assert icc.estimate == pytest.approx(6 / 7)
    assert icc.n == 3 and icc.reason is None
    assert icc.low <= icc.estimate <= icc.high


def test_icc_is_absolute_agreement() -> None:
    # Judge = human + 10 on every transcript. Unit means 55…95 around 75: MS_R = 2·1000/4 = 500;
    # rater means 80, 70: MS_C = 5·(25 + 25) = 250; residuals all 0: MS_E = 0.
    # ICC(A,1) = 500/(500 + 0 + 2·250/5) = 5/6; consistency, ICC(C,1) = 500/500, would forgive the offset.
    human = np.array([50, 60, 70, 80, 90], dtype=float)
    assert icc_totals(human + 10, human).estimate == pytest.approx(5 / 6)


def test_icc_degenerate() -> None:
    assert "same" in (icc_totals([4, 4, 4], [4, 4, 4]).reason or "")
    one = icc_totals([3, nan], [3, 5])
    assert one.n == 1 and math.isnan(one.estimate) and one.reason


def test_degenerate_inputs_are_nan_not_errors() -> None:
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1], [0, 1, 2]))
    assert math.isnan(weighted_kappa([1, 1, 1], [1, 1, 1], [0, 1, 2]))
    assert math.isnan(spearman([1, 1, 1], [0, 1, 2]))
    assert math.isnan(kendall([0, 1, 2], [2, 2, 2]))
    assert math.isnan(spearman([1], [1]))
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1]], [0, 1], "ordinal"))
    assert math.isnan(krippendorff_alpha([[1, nan], [nan, 0]], [0, 1], "ordinal"))  # nothing pairable
    assert math.isnan(exact_agreement([nan, nan], [1, 1]))
    # Both constant but at different levels is defined: no agreement beyond chance, κ = 0.
    assert cohen_kappa([0, 0, 0], [2, 2, 2], [0, 1, 2]) == pytest.approx(0.0)


def test_scores_off_the_levels_are_a_bug() -> None:
    with pytest.raises(ValueError, match=r"\[4\.0\]"):
        cohen_kappa([0, 4], [0, 3], [0, 3, 5])
    with pytest.raises(ValueError, match="differ in length"):
        exact_agreement([0, 1], [0])
    with pytest.raises(ValueError, match="ascending"):
        compare_scores([0], [0], [3, 0])


def test_compare_scores_reports_reasons_for_undefined_metrics() -> None:
    result = compare_scores([2, 2, 2, nan], [2, 2, 2, 1], [0, 1, 2], n_resamples=50)
    assert result.n == 3
    m = result.metrics
    assert m.exact.estimate == 1.0 and m.exact.low == 1.0 and m.exact.reason is None
    assert math.isnan(m.weighted_kappa.estimate) and "same level" in (m.weighted_kappa.reason or "")
    assert m.weighted_kappa.dropped == 50 and m.weighted_kappa.resamples == 0
    assert "judge and human" in (m.spearman.reason or "")
    assert result.confusion == [[0, 0, 0], [0, 0, 0], [0, 0, 3]]

    empty = compare_scores([nan, 1], [0, nan], [0, 1], n_resamples=50)
    assert empty.n == 0 and empty.confusion == [[0, 0], [0, 0]]
    assert all(math.isnan(getattr(empty.metrics, name).estimate) for name in Metrics.model_fields)
    assert "no transcript" in (empty.metrics.mae.reason or "")

    one = compare_scores([1], [0], [0, 1], n_resamples=50).metrics
    assert one.mae.estimate == 1.0 and "only one" in (one.spearman.reason or "")


def test_pair_agreement_serialises_nan_as_null() -> None:
    dumped = json.loads(compare_scores([2, 2], [2, 2], [0, 1, 2], n_resamples=10).model_dump_json())
    assert dumped["metrics"]["kappa"]["estimate"] is None
    assert dumped["metrics"]["exact"]["estimate"] == 1.0


def _scores(seed: int, n: int, levels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """A human and a judge that mostly agrees, one level off now and then."""
    rng = np.random.default_rng(seed)
    points = np.array(levels, dtype=float)
    truth = rng.integers(0, len(levels), n)
    judge = np.clip(truth + rng.choice([-1, 0, 1], n, p=[0.2, 0.6, 0.2]), 0, len(levels) - 1)
    return points[judge], points[truth]


def test_vectorised_bootstrap_matches_the_libraries_resample_for_resample() -> None:
    # compare_scores recomputes the metrics from resampled confusion matrices; bootstrap_ci calls the
    # libraries on each resample. Same seed → same resamples → the same interval for every metric.
    levels = [0, 3, 5, 8]
    judge, human = _scores(3, 40, levels)
    fast = compare_scores(judge, human, levels, n_resamples=40, seed=11).metrics
    point = {
        "exact": exact_agreement,
        "adjacent": lambda a, b: adjacent_agreement(a, b, levels),
        "kappa": lambda a, b: cohen_kappa(a, b, levels),
        "weighted_kappa": lambda a, b: weighted_kappa(a, b, levels),
        "alpha_ordinal": lambda a, b: krippendorff_alpha(np.column_stack([a, b]), levels, "ordinal"),
        "alpha_interval": lambda a, b: krippendorff_alpha(np.column_stack([a, b]), levels, "interval"),
        "spearman": spearman,
        "kendall": kendall,
        "mae": mean_absolute_error,
        "bias": mean_bias,
    }
    assert set(point) == set(Metrics.model_fields)
    for name, fn in point.items():
        slow = bootstrap_ci(fn, judge, human, n_resamples=40, seed=11)
        got = getattr(fast, name)
        assert (got.estimate, got.low, got.high) == pytest.approx((slow.estimate, slow.low, slow.high)), name


def test_bootstrap_is_reproducible_and_contains_the_estimate() -> None:
    judge, human = _scores(5, 80, [0, 1, 2])
    first = bootstrap_ci(exact_agreement, judge, human, n_resamples=200, seed=1)
    again = bootstrap_ci(exact_agreement, judge, human, n_resamples=200, seed=1)
    other = bootstrap_ci(exact_agreement, judge, human, n_resamples=200, seed=2)
    assert first == again
    assert (first.low, first.high) != (other.low, other.high)
    assert first.low <= first.estimate <= first.high
    assert first.low < first.high and first.resamples == 200 and first.dropped == 0
    wide = bootstrap_ci(exact_agreement, judge, human, n_resamples=200, seed=1, confidence=0.99)
    assert wide.low <= first.low and wide.high >= first.high


def test_bootstrap_drops_and_counts_undefined_resamples() -> None:
    # Four units, two levels each: a resample that draws only equal values is constant → Spearman NaN.
    ci = bootstrap_ci(spearman, [0, 0, 1, 1], [0, 1, 0, 1], n_resamples=300, seed=0)
    assert ci.dropped > 0 and ci.resamples + ci.dropped == 300


def test_bootstrap_resamples_whole_units() -> None:
    # Each transcript has two rows, +v and −v. Drawing whole transcripts keeps every resample's sum at 0;
    # drawing rows would not.
    rows = np.array([1.0, -1.0, 2.0, -2.0, 5.0, -5.0])
    units = ["a", "a", "b", "b", "c", "c"]
    clustered = bootstrap_ci(np.sum, rows, n_resamples=100, unit_index=units)
    assert (clustered.low, clustered.high) == (0.0, 0.0)
    loose = bootstrap_ci(np.sum, rows, n_resamples=100)
    assert loose.low < 0 < loose.high


def test_consensus_levels() -> None:
    # Median of level indices, rounded down between two levels: (0,3,5) → 3; (0,5) → idx 1 → 3;
    # (0,3) → idx .5 → 0; nobody → NaN.
    ratings: list[list[float]] = [[0, 3, 5], [0, 5, nan], [0, 3, nan], [nan, nan, nan]]
    assert consensus_levels(ratings, [0, 3, 5]).tolist()[:3] == [3.0, 3.0, 0.0]
    assert math.isnan(consensus_levels(ratings, [0, 3, 5])[3])


def test_pairwise_human_agreement_by_hand() -> None:
    # Raters A, B, C on levels 0/1/2. A–B share units 1–3, A–C unit 4 only, B–C none (left out).
    ratings = [[0, 0, nan], [1, 2, nan], [2, 2, nan], [0, nan, 1], [nan, nan, 2]]
    result = pairwise_human_agreement(ratings, [0, 1, 2], rater_ids=["A", "B", "C"])
    pairs = {(c.rater, c.other): c for c in result.comparisons}
    assert set(pairs) == {("A", "B"), ("A", "C")}
    # A–B: (0,0) (1,2) (2,2): exact 2/3, bias (0 − 1 + 0)/3 = −1/3. A–C: (0,1): exact 0, bias −1.
    assert pairs["A", "B"].metrics.exact == pytest.approx(2 / 3)
    assert pairs["A", "B"].metrics.bias == pytest.approx(-1 / 3)
    assert result.mean.exact == pytest.approx((2 / 3 + 0) / 2)
    assert result.mean.bias == pytest.approx((1 / 3 + 1) / 2)  # mean of |bias|
    # A–C has one unit: kappa undefined there, so the mean kappa is A–B's alone.
    assert result.mean.kappa == pytest.approx(pairs["A", "B"].metrics.kappa)
    assert result.n_raters == 3


def test_rater_vs_consensus_by_hand() -> None:
    # Three raters, levels 0/1/2, four units.
    ratings = [[0, 0, 1], [1, 2, 2], [2, 2, 2], [0, 1, 2]]
    result = rater_vs_consensus(ratings, [0, 1, 2], rater_ids=["A", "B", "C"])
    a = next(c for c in result.comparisons if c.rater == "A").metrics
    # Others of A (B, C): medians (0,1)→0, (2,2)→2, (2,2)→2, (1,2)→1 (rounded down); A = 0 1 2 0.
    # Exact: units 1 and 3 → 2/4. Means of others: .5, 2, 2, 1.5; |A − mean| = .5, 1, 0, 1.5 → MAE 0.75.
    assert a.exact == pytest.approx(0.5)
    assert a.mae == pytest.approx(0.75)
    assert a.bias == pytest.approx(-0.75)
    assert result.mean.mae == pytest.approx(np.mean([c.metrics.mae for c in result.comparisons]))


def test_ceiling_with_a_single_rater_has_a_reason() -> None:
    result = pairwise_human_agreement([[0], [1]], [0, 1])
    assert result.comparisons == [] and result.reason and math.isnan(result.mean.exact)


def _panel(seed: int, n: int = 80, raters: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """True levels 0..4 and human raters who are off by one level 40% of the time."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 5, n)
    noise = rng.choice([-1, 0, 1], size=(n, raters), p=[0.2, 0.6, 0.2])
    return truth.astype(float), np.clip(truth[:, None] + noise, 0, 4).astype(float)


def test_alt_test_passes_a_judge_that_equals_the_consensus() -> None:
    truth, ratings = _panel(7)
    result = alt_test(truth, ratings)
    assert result.passed and result.winning_rate == 1.0
    assert result.advantage_probability > 0.9
    assert all(a.won and a.p_adjusted < 0.05 for a in result.annotators)


def test_alt_test_fails_a_random_judge() -> None:
    truth, ratings = _panel(7)
    noise = np.random.default_rng(99).integers(0, 5, truth.size).astype(float)
    result = alt_test(noise, ratings)
    assert not result.passed and result.winning_rate == 0.0
    assert result.advantage_probability < 0.5
    accuracy = alt_test(noise, ratings, alignment="accuracy")
    assert not accuracy.passed and alt_test(truth, ratings, alignment="accuracy").passed


def _student_t3_cdf(t: float) -> float:
    """Closed form of Student's t CDF with 3 degrees of freedom: ½ + (θ + sin θ cos θ)/π, θ = atan(t/√3)."""
    theta = math.atan(t / math.sqrt(3))
    return 0.5 + (theta + math.sin(theta) * math.cos(theta)) / math.pi


def test_alt_test_by_hand() -> None:
    # Three raters, four units, levels 0..2, ε = 0.2. judge = 0 1 2 0.
    ratings = [[0, 0, 1], [1, 1, 1], [2, 1, 2], [0, 1, 0]]
    judge = [0, 1, 2, 0]
    result = alt_test(judge, ratings, rater_ids=["A", "B", "C"], min_units=2)
    by = {a.rater: a for a in result.annotators}
    # A equals the judge on every unit: all ties, d = W_h − W_f = 0 < ε with no variance → p = 0.
    assert by["A"].p_value == 0.0 and by["A"].llm_advantage == 1.0 and by["A"].human_advantage == 1.0
    # C vs others (A, B): unit 1 others (0,0): judge 0 → 0, C 1 → −1 (judge better); units 2–4 tie.
    # d = −1 0 0 0: mean −.25, sd .5, t = (−.25 − .2)/(.5/2) = −1.8, df 3.
    assert by["C"].llm_advantage == 1.0 and by["C"].human_advantage == 0.75
    p_c = _student_t3_cdf(-1.8)
    assert by["C"].p_value == pytest.approx(p_c)
    # B vs others (A, C): units 3 and 4 the judge is exact (−0) and B off by one (−1): d = 0 0 −1 −1,
    # mean −.5, sd √(1/3), t = −.7/(√(1/3)/2) ≈ −2.425.
    p_b = _student_t3_cdf(-0.7 / (math.sqrt(1 / 3) / 2))
    assert by["B"].p_value == pytest.approx(p_b)
    # Benjamini–Yekutieli, m = 3, c(m) = 1 + 1/2 + 1/3 = 11/6: adjusted p_(i) = min_{j≥i} m·c(m)·p_(j)/j.
    # p_C ≈ .085 → .156; p_B ≈ .047 → min(.129, .156) = .129; p_A = 0. Only A is won: ω = 1/3, not passed,
    # although ρ = 1 — four units are too few to beat ε with confidence.
    assert by["C"].p_adjusted == pytest.approx(p_c * 5.5 / 3)
    assert by["B"].p_adjusted == pytest.approx(min(p_b * 5.5 / 2, p_c * 5.5 / 3))
    assert [a.won for a in result.annotators] == [True, False, False]
    assert result.winning_rate == pytest.approx(1 / 3) and result.advantage_probability == 1.0
    assert not result.passed


def test_alt_test_needs_three_annotators_with_enough_units() -> None:
    truth, ratings = _panel(7, raters=2)
    result = alt_test(truth, ratings)
    assert not result.passed and "at least 3" in (result.reason or "")
    truth, ratings = _panel(7, n=20)
    few = alt_test(truth, ratings)
    assert few.annotators == [] and set(few.skipped) == {"0", "1", "2", "3"} and math.isnan(few.winning_rate)


def _ci(estimate: float, low: float) -> CI:
    return CI(estimate=estimate, low=low, high=1.0, confidence=0.95, resamples=100, dropped=0)


def test_verdict() -> None:
    assert verdict(_ci(0.7, 0.45)) == "trusted"
    assert verdict(_ci(0.6, 0.4)) == "trusted"  # the thresholds are inclusive
    assert verdict(_ci(0.7, 0.35)) == "review"  # good estimate, too uncertain
    assert verdict(_ci(0.5, 0.3)) == "review"
    assert verdict(_ci(0.39, 0.1)) == "not trusted"
    assert verdict(_ci(nan, nan)) == "review"
    strict = VerdictThresholds(trusted_estimate=0.8, trusted_low=0.6, not_trusted_below=0.6)
    assert verdict(_ci(0.7, 0.65), strict) == "review"
    assert verdict(_ci(0.55, 0.4), strict) == "not trusted"
    with pytest.raises(ValidationError):
        VerdictThresholds(trusted_estimate=0.3, not_trusted_below=0.4)


def test_icc_with_two_pairs_is_nan_with_a_reason() -> None:
    # pingouin asserts on two units; we answer NaN with the reason instead of crashing a report.
    result = icc_totals([10.0, 20.0], [12.0, 19.0])
    assert math.isnan(result.estimate) and result.n == 2 and "three" in (result.reason or "")


# --- the judge and the raters by the same definitions ---------------------------------------------


def test_judge_against_a_consensus_uses_the_raters_definitions() -> None:
    # Rater 0 of a panel "as the judge" against the other raters: compare_scores with the others' median
    # level and mean gives exactly rater_vs_consensus's figures for rater 0, every metric.
    _, ratings = _panel(11, n=60)
    levels = [0, 1, 2, 3, 4]
    others = ratings[:, 1:]
    pair = compare_scores(ratings[:, 0], consensus_levels(others, levels), levels,
                             human_numeric=others.mean(axis=1), n_resamples=50)
    rater0 = rater_vs_consensus(ratings, levels).comparisons[0].metrics
    for name in Metrics.model_fields:
        assert getattr(pair.metrics, name).estimate == pytest.approx(getattr(rater0, name)), name
    assert pair.consensus == CONSENSUS_RULE and "mean" in pair.consensus and "rounded down" in pair.consensus
    vs = rater_vs_consensus(ratings, levels)
    assert vs.consensus is not None and vs.consensus.startswith("the other raters")


def test_point_based_intervals_against_a_mean_match_the_libraries_on_identical_resamples() -> None:
    _, ratings = _panel(12, n=50)
    levels = [0, 1, 2, 3, 4]
    judge, others = ratings[:, 0], ratings[:, 1:]
    mean = others.mean(axis=1)  # thirds: not levels, so these metrics need their own value domain
    pair = compare_scores(judge, consensus_levels(others, levels), levels, human_numeric=mean,
                             n_resamples=200, seed=4)
    for name, fn in (("spearman", spearman), ("kendall", kendall), ("mae", mean_absolute_error),
                     ("bias", mean_bias),
                     ("alpha_interval", lambda a, b: unchecked_alpha(np.column_stack([a, b]), "interval"))):
        reference = bootstrap_ci(fn, judge, mean, n_resamples=200, seed=4)
        got = getattr(pair.metrics, name)
        assert (got.low, got.high) == pytest.approx((reference.low, reference.high)), name
    # The level-based ones still use the median level: exact is not defined against a mean of thirds.
    assert pair.metrics.exact.estimate == exact_agreement(judge, consensus_levels(others, levels))
