"""Uninformative judges: hand-derived constant levels, seeded prior draws, compared like the judge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.agreement.baselines import baseline_agreements, constant_judge, prior_judge
from pipeline.agreement.compare import compare_scores
from pipeline.agreement.raters import consensus_levels
from pipeline.agreement.results import CONSENSUS_RULE

nan = math.nan


def test_constant_judge_is_the_median_level_of_every_human_score() -> None:
    # Pooled scores 0 1 2 4 3 → median 2, for every unit (also the one nobody scored: it is dropped later).
    assert constant_judge([[0, 1], [2, nan], [4, 3], [nan, nan]], [0, 1, 2, 3, 4]).tolist() == [2, 2, 2, 2]
    # 0 1 2 4: the median 1.5 falls between two levels and is rounded down, as for the consensus.
    assert constant_judge([[0, 1], [2, 4]], [0, 1, 2, 3, 4]).tolist() == [1, 1]
    # Levels 0/3/5: the median is taken over level order (0, 3 → index 0.5 → level 0).
    assert constant_judge([[0], [3]], [0, 3, 5]).tolist() == [0, 0]
    assert np.isnan(constant_judge([[nan]], [0, 1])).all()


def test_prior_judge_draws_seeded_from_the_human_scores() -> None:
    ratings = np.array([[0, 4], [4, nan], [4, 4]] * 50, dtype=float)
    draws = prior_judge(ratings, seed=7)
    assert set(draws.tolist()) == {0.0, 4.0} and draws.size == 150
    assert np.array_equal(draws, prior_judge(ratings, seed=7))
    assert not np.array_equal(draws, prior_judge(ratings, seed=8))
    assert np.mean(draws == 0) == pytest.approx(50 / 250, abs=0.08)  # 50 of the 250 scores are 0


def test_baselines_are_compared_exactly_like_the_judge() -> None:
    ratings = np.array([[0, 1], [1, 1], [2, 3], [3, 4], [4, 4], [2, 2]], dtype=float)
    levels = [0, 1, 2, 3, 4]
    human = consensus_levels(ratings, levels)
    mean = ratings.mean(axis=1)
    out = {b.name: b for b in baseline_agreements(ratings, levels, human, human_numeric=mean, n_resamples=50)}
    expected = compare_scores(constant_judge(ratings, levels), human, levels, human_numeric=mean, n_resamples=50)
    assert out["constant"].agreement == expected
    assert out["constant"].agreement.consensus == CONSENSUS_RULE
    # Bias of the constant 2 against the raters' mean (0.5 1 2.5 3.5 4 2 → 13.5/6 = 2.25): −0.25.
    assert out["constant"].agreement.metrics.bias.estimate == pytest.approx(-0.25)
