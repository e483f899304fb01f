"""Means with valid intervals from a judge on every chat and people on a random few: prediction-powered inference.

The judge's mean over a run is biased wherever the judge is; the labelled chats alone are few. PPI
(Angelopoulos, Bates, Fannjiang, Jordan & Zrnic, *Science* 2023) uses both: the judge's mean over the
unlabelled chats, minus the judge's mean error on the labelled ones (the "rectifier"),

    θ̂ = mean(f(X̃)) − mean(f(X) − Y),   SE² = var(f(X̃)) / N + var(f(X) − Y) / n,

with a normal (CLT) interval θ̂ ± z·SE. It is valid whatever the judge's bias, provided the labelled
chats are a uniform random sample of the same chats. The estimator and the interval are `ppi_py`'s
(the authors' package), classical PPI (λ = 1); judge-only and labelled-only means use its classical
CLT interval, so all three are on the same footing.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

Method = Literal["judge only", "ppi", "labelled only"]


class MeanEstimate(BaseModel):
    """A mean with its normal-approximation interval."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field(description="Which data the mean uses.")
    estimate: float = Field(description="The mean; NaN when there is no data for it.")
    low: float = Field(description="Lower end of the interval; NaN when it cannot be computed.")
    high: float = Field(description="Upper end of the interval.")
    confidence: float = Field(description="Coverage of the interval, e.g. 0.95.")
    n_labelled: int = Field(description="Chats with a human score used.")
    n_unlabelled: int = Field(description="Chats with only a judge score used.")


def _clean(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    a = np.asarray(values, dtype=np.float64).ravel()
    return a[~np.isnan(a)]


def _undefined(method: Method, confidence: float, n: int, big_n: int) -> MeanEstimate:
    return MeanEstimate(method=method, estimate=math.nan, low=math.nan, high=math.nan, confidence=confidence,
                        n_labelled=n, n_unlabelled=big_n)


def classical_mean(values: npt.ArrayLike, *, method: Method, confidence: float = 0.95) -> MeanEstimate:
    """The plain mean with its CLT interval (`ppi_py.classical_mean_ci`); NaN interval below two values."""
    y = _clean(values)
    labelled = method == "labelled only"
    n, big_n = (y.size, 0) if labelled else (0, y.size)
    if y.size < 2:
        return _undefined(method, confidence, n, big_n) if not y.size else MeanEstimate(
            method=method, estimate=float(y[0]), low=math.nan, high=math.nan, confidence=confidence,
            n_labelled=n, n_unlabelled=big_n)
    from ppi_py import classical_mean_ci  # imported here: it costs seconds and only this needs it

    low, high = classical_mean_ci(y, alpha=1 - confidence)
    return MeanEstimate(method=method, estimate=float(y.mean()), low=float(low), high=float(high),
                        confidence=confidence, n_labelled=n, n_unlabelled=big_n)


def ppi_mean(
    human: npt.ArrayLike, judge_labelled: npt.ArrayLike, judge_unlabelled: npt.ArrayLike, *, confidence: float = 0.95
) -> MeanEstimate:
    """Classical PPI mean of the human scores: `human` and `judge_labelled` pair up chat by chat (NaN pairs
    dropped), `judge_unlabelled` are the judge's scores of the chats nobody labelled. NaN with fewer than
    two labelled or two unlabelled chats."""
    h = np.asarray(human, dtype=np.float64).ravel()
    f = np.asarray(judge_labelled, dtype=np.float64).ravel()
    if h.shape != f.shape:
        raise ValueError(f"{h.size} human scores for {f.size} judge scores of the labelled chats")
    both = ~(np.isnan(h) | np.isnan(f))
    h, f = h[both], f[both]
    unlabelled = _clean(judge_unlabelled)
    if h.size < 2 or unlabelled.size < 2:
        return _undefined("ppi", confidence, int(h.size), int(unlabelled.size))
    from ppi_py import ppi_mean_ci, ppi_mean_pointestimate

    estimate = ppi_mean_pointestimate(h, f, unlabelled, lam=1)
    low, high = ppi_mean_ci(h, f, unlabelled, alpha=1 - confidence, lam=1)
    return MeanEstimate(method="ppi", estimate=float(np.ravel(estimate)[0]), low=float(np.ravel(low)[0]),
                        high=float(np.ravel(high)[0]), confidence=confidence, n_labelled=int(h.size),
                        n_unlabelled=int(unlabelled.size))
