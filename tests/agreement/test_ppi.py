"""PPI means: a hand-derived value, the degenerate cases, and coverage on simulated chats where the truth is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.agreement.ppi import classical_mean, ppi_mean


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
