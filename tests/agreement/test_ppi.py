"""PPI means: a hand-derived value, the degenerate cases, and coverage on simulated chats where the truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.agreement.ppi import Stratum, classical_mean, ppi_mean, stratified_mean


def test_ppi_mean_by_hand() -> None:
    # Labelled: human 1 2 3, judge 2 2 4; unlabelled judge 3 5.
    # θ̂ = mean(3, 5) − mean(2−1, 2−2, 4−3) = 4 − 2/3 = 10/3.
    # SE² = var(3, 5)/2 + var(−1, 0, −1)/3 with population variances (ddof 0, as ppi_py):
    #     = 1/2 + (2/9)/3 = 0.5 + 2/27 = 0.574074…;  SE = 0.757677…; z(0.975) = 1.959964.
    # Interval 10/3 ± 1.485019 = [1.848314, 4.818352].
    m = ppi_mean([1, 2, 3], [2, 2, 4], [3, 5])
    assert m.estimate == pytest.approx(10 / 3)
    assert (m.low, m.high) == pytest.approx((1.848314, 4.818352), abs=1e-6)
    assert (m.n_labelled, m.n_unlabelled, m.method) == (3, 2, "ppi")


def test_classical_mean_by_hand_and_degenerate_cases() -> None:
    # 1 2 3: mean 2, population sd √(2/3), SE √(2/3)/√3 = √2/3 = 0.471405; ±1.959964·SE = ±0.923936.
    m = classical_mean([1, 2, 3, math.nan], method="labelled only")
    assert (m.estimate, m.low, m.high) == pytest.approx((2, 1.076064, 2.923936), abs=1e-6)
    assert m.n_labelled == 3 and m.n_unlabelled == 0
    one = classical_mean([4], method="judge only")
    assert one.estimate == 4 and math.isnan(one.low) and one.n_unlabelled == 1
    assert math.isnan(classical_mean([], method="judge only").estimate)
    assert math.isnan(ppi_mean([1], [1], [1, 2]).estimate)  # one labelled chat: no variance
    with pytest.raises(ValueError, match="3 human scores for 2"):
        ppi_mean([1, 2, 3], [1, 2], [1, 2])


def test_ppi_covers_the_truth_where_a_biased_judge_does_not() -> None:
    # 1,000 chats per run, 100 of them labelled at random, a judge that scores 0.6 points high with noise.
    # Over 500 seeds the 95% PPI interval covers the true mean about 95% of the time (binomial sd ≈ 1%); the
    # judge-only interval, narrow around the wrong value, almost never does.
    covered_ppi = covered_judge = 0
    widths = []
    for seed in range(500):
        rng = np.random.default_rng(seed)
        truth = rng.integers(0, 5, 1000).astype(float)  # the human score every chat would get, mean 2
        judge = np.clip(truth + 0.6 + rng.normal(0, 0.8, 1000), 0, 4)
        labelled = rng.choice(1000, 100, replace=False)
        rest = np.setdiff1d(np.arange(1000), labelled)
        m = ppi_mean(truth[labelled], judge[labelled], judge[rest])
        j = classical_mean(judge, method="judge only")
        covered_ppi += m.low <= 2.0 <= m.high
        covered_judge += j.low <= 2.0 <= j.high
        widths.append(m.high - m.low)
    assert 0.92 <= covered_ppi / 500 <= 0.975
    assert covered_judge / 500 < 0.05
    labelled_only_width = 2 * 1.96 * math.sqrt(2) / 10  # the labelled chats alone: sd √2, n 100
    assert np.mean(widths) < labelled_only_width  # the judge's help: a narrower interval than the labels alone


def test_stratified_ppi_mean_by_hand() -> None:
    # Stratum 1 is the example above: θ1 = 10/3, SE1² = 0.574074, 5 chats.
    # Stratum 2: human 0 2, judge 1 1, unlabelled judge 1 3 1 3: θ2 = 2 − mean(1, −1) = 2;
    #   SE2² = var(1, 3, 1, 3)/4 + var(1, −1)/2 = 1/4 + 1/2 = 0.75; 6 chats.
    # Weights 5/11, 6/11: θ̂ = 50/33 + 12/11 = 86/33 = 2.606061;
    # SE² = (5/11)²·0.574074 + (6/11)²·0.75 = 0.341751, SE = 0.584595, ±1.959964·SE → [1.460276, 3.751845].
    m = stratified_mean([Stratum([1, 2, 3], [2, 2, 4], [3, 5]), Stratum([0, 2], [1, 1], [1, 3, 1, 3])],
                        method="ppi")
    assert m.estimate == pytest.approx(86 / 33)
    assert (m.low, m.high) == pytest.approx((1.460276, 3.751845), abs=1e-6)
    assert (m.n_labelled, m.n_unlabelled, m.strata) == (5, 6, 2)
    # One stratum is plain PPI; a stratum too small for its own interval (one labelled chat) is pooled with
    # the others that are, and that pool, still too small, with the largest stratum: here all are one.
    assert stratified_mean([Stratum([1, 2, 3], [2, 2, 4], [3, 5])], method="ppi") == ppi_mean([1, 2, 3], [2, 2, 4],
                                                                                              [3, 5])
    pooled = stratified_mean([Stratum([1, 2, 3], [2, 2, 4], [3, 5]), Stratum([0], [1], [1, 3, 1])], method="ppi")
    assert pooled == ppi_mean([1, 2, 3, 0], [2, 2, 4, 1], [3, 5, 1, 3, 1])
    # Labelled only: each stratum's plain mean, weighted the same way (2 × 5/11 + 1 × 6/11 = 16/11).
    assert stratified_mean([Stratum([1, 2, 3], [2, 2, 4], [3, 5]), Stratum([0, 2], [1, 1], [1, 3, 1, 3])],
                           method="labelled only").estimate == pytest.approx(16 / 11)


def test_stratified_ppi_covers_the_truth_where_unweighted_ppi_does_not() -> None:
    # 1,000 chats in three strata of 600, 300 and 100 whose true means are 1, 2 and 3 (run mean 1.5), labelled
    # 20, 30 and 50 at random within each: the small stratum is sampled 12 times as densely as the large one.
    # The judge is off by +0.2, +0.6 and −0.8 points there (+0.28, +0.55, −0.81 once clipped to 0–4), so the
    # labelled chats' mean error (−0.18) is not the run's (+0.25). Over 300 seeds the stratified 95% interval
    # covers 1.5 about 95% of the time (93.3% here; binomial sd ≈ 1.3%); PPI that pools the labelled chats as
    # if they were one random sample almost never does (0.7%).
    sizes, labelled, lows, bias = (600, 300, 100), (20, 30, 50), (0, 1, 2), (0.2, 0.6, -0.8)
    seeds = 300
    covered_stratified = covered_pooled = 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        strata, pooled = [], ([], [], [])
        for size, n, low, b in zip(sizes, labelled, lows, bias, strict=True):
            truth = rng.integers(low, low + 3, size).astype(float)  # uniform on 3 levels: mean low + 1
            judge = np.clip(truth + b + rng.normal(0, 0.8, size), 0, 4)
            chosen = np.zeros(size, dtype=bool)
            chosen[rng.choice(size, n, replace=False)] = True
            strata.append(Stratum(truth[chosen], judge[chosen], judge[~chosen]))
            for part, values in zip(pooled, strata[-1], strict=True):
                part.append(values)
        s = stratified_mean(strata, method="ppi")
        p = ppi_mean(*(np.concatenate(part) for part in pooled))
        covered_stratified += s.low <= 1.5 <= s.high
        covered_pooled += p.low <= 1.5 <= p.high
    assert 0.92 <= covered_stratified / seeds <= 0.975
    assert covered_pooled / seeds < 0.05
