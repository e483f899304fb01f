"""Uninformative judges: what a judge that never reads the chat scores on the same labels.

A real judge must beat both, with its interval: a constant judge (the humans' median level of the
criterion, given to every chat) and a prior-sampling judge (each chat a seeded draw from the humans'
scores of the criterion, pooled). Either knows the score distribution and nothing about the chat, so
any agreement they reach is what the labels give away for free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from pipeline.agreement.compare import compare_scores
from pipeline.agreement.raters import consensus_levels
from pipeline.agreement.results import PairAgreement

FloatArray = npt.NDArray[np.float64]
BaselineName = Literal["constant", "prior"]


class BaselineAgreement(BaseModel):
    """One uninformative judge against the same human scores as the real judge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: BaselineName = Field(description="'constant' (median level) or 'prior' (draws from the human scores).")
    rule: str = Field(description="How the baseline's scores were made.")
    agreement: PairAgreement = Field(description="Every metric against the humans, as for the judge.")


def _pooled(ratings: npt.ArrayLike) -> FloatArray:
    m = np.asarray(ratings, dtype=np.float64)
    return m[~np.isnan(m)]


def constant_judge(ratings: npt.ArrayLike, levels: Sequence[float]) -> FloatArray:
    """Per unit (row of units × raters), the median level of every human score of the criterion."""
    m = np.asarray(ratings, dtype=np.float64)
    pooled = _pooled(m)
    if not pooled.size:
        return np.full(m.shape[0], np.nan)
    median = consensus_levels(pooled[None, :], levels)[0]
    return np.full(m.shape[0], median)


def prior_judge(ratings: npt.ArrayLike, seed: int) -> FloatArray:
    """Per unit, one seeded draw from every human score of the criterion (its empirical distribution)."""
    m = np.asarray(ratings, dtype=np.float64)
    pooled = _pooled(m)
    if not pooled.size:
        return np.full(m.shape[0], np.nan)
    return np.asarray(np.random.default_rng(seed).choice(pooled, size=m.shape[0]), dtype=np.float64)


def baseline_agreements(
    ratings: npt.ArrayLike,
    levels: Sequence[float],
    human: npt.ArrayLike,
    *,
    human_numeric: npt.ArrayLike | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    confidence: float = 0.95,
) -> list[BaselineAgreement]:
    """Both baselines compared with `human` (and `human_numeric`) exactly as `compare_scores` compares the judge."""
    made: tuple[tuple[BaselineName, FloatArray, str], ...] = (
        ("constant", constant_judge(ratings, levels), "the humans' median level of the criterion, for every chat"),
        ("prior", prior_judge(ratings, seed), f"per chat a draw from the humans' scores of the criterion, seed {seed}"),
    )
    return [
        BaselineAgreement(
            name=name,
            rule=rule,
            agreement=compare_scores(scores, human, levels, human_numeric=human_numeric,
                                        n_resamples=n_resamples, seed=seed, confidence=confidence),
        )
        for name, scores, rule in made
    ]
