"""Means with valid intervals from a judge on every chat and people on a random few: prediction-powered inference.

The judge's mean over a run is biased wherever the judge is; the labelled chats alone are few. PPI
(Angelopoulos, Bates, Fannjiang, Jordan & Zrnic, *Science* 2023) uses both: the judge's mean over the
unlabelled chats, minus the judge's mean error on the labelled ones (the "rectifier"),

    θ̂ = mean(f(X̃)) − mean(f(X) − Y),   SE² = var(f(X̃)) / N + var(f(X) − Y) / n,

with a normal (CLT) interval θ̂ ± z·SE. It is valid whatever the judge's bias, provided the labelled
chats are a uniform random sample of the same chats. The estimator and the interval are `ppi_py`'s
(the authors' package), classical PPI (λ = 1); judge-only and labelled-only means use its classical
CLT interval, so all three are on the same footing.

A stratified sample (`kefu sample` draws one per group) is a uniform random sample within each stratum
only. `stratified_mean` estimates each stratum on its own and weights them by their share of the chats,

    θ̂ = Σ_h W_h θ̂_h,   SE² = Σ_h W_h² SE_h²,   W_h = N_h / N,

the standard stratified estimator (Cochran, *Sampling Techniques*, 3rd ed., §5.3), PPI within each
stratum as in Angelopoulos et al.'s stratified setting. A stratum with too few labelled or unlabelled
chats for its own interval is pooled with the other such strata (collapsed strata, Cochran §5A.12),
and the pool, if still too small, with the largest stratum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

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
    strata: int = Field(default=1, description="Strata weighted by their share of the chats; 1: not stratified.")


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


class Stratum(NamedTuple):
    """One stratum's chats: the labelled ones' human and judge scores, chat by chat, and the others' judge scores."""

    human: npt.ArrayLike
    judge_labelled: npt.ArrayLike
    judge_unlabelled: npt.ArrayLike


class _Cell(NamedTuple):
    human: npt.NDArray[np.float64]
    judge: npt.NDArray[np.float64]
    unlabelled: npt.NDArray[np.float64]

    @property
    def chats(self) -> int:
        return int(self.judge.size + self.unlabelled.size)


def _cell(stratum: Stratum) -> _Cell:
    h = np.asarray(stratum.human, dtype=np.float64).ravel()
    f = np.asarray(stratum.judge_labelled, dtype=np.float64).ravel()
    if h.shape != f.shape:
        raise ValueError(f"{h.size} human scores for {f.size} judge scores of the labelled chats")
    both = ~(np.isnan(h) | np.isnan(f))
    return _Cell(h[both], f[both], _clean(stratum.judge_unlabelled))


def _merge(cells: Sequence[_Cell]) -> _Cell:
    return _Cell(*(np.concatenate([getattr(c, k) for c in cells]) for k in _Cell._fields))


def _collapse(cells: list[_Cell], method: Literal["ppi", "labelled only"]) -> list[_Cell]:
    """Strata too small for an interval of their own, pooled (and the pool, if still too small, into the largest)."""
    def enough(c: _Cell) -> bool:
        return c.human.size >= 2 and (method == "labelled only" or c.unlabelled.size >= 2)

    kept = [c for c in cells if enough(c)]
    small = [c for c in cells if not enough(c)]
    if not small:
        return kept
    pool = _merge(small)
    if enough(pool) or not kept:
        return [*kept, pool]
    largest = max(range(len(kept)), key=lambda i: kept[i].chats)
    return [*kept[:largest], _merge([kept[largest], pool]), *kept[largest + 1:]]


def stratified_mean(strata: Sequence[Stratum], *, method: Literal["ppi", "labelled only"],
                    confidence: float = 0.95) -> MeanEstimate:
    """The PPI (or labelled-only) mean of a stratified sample: each stratum's estimate weighted by its share of
    the chats with a judge score, with the stratified interval; exactly `ppi_mean` / `classical_mean` of the
    pooled chats when only one stratum is left."""
    cells = _collapse([c for c in map(_cell, strata) if c.chats], method)
    parts = [ppi_mean(c.human, c.judge, c.unlabelled, confidence=confidence) if method == "ppi"
             else classical_mean(c.human, method="labelled only", confidence=confidence) for c in cells]
    n, big_n = sum(p.n_labelled for p in parts), sum(p.n_unlabelled for p in parts)
    if len(parts) == 1:
        return parts[0]
    if not parts or any(math.isnan(p.low) for p in parts):
        return _undefined(method, confidence, n, big_n)
    from scipy.stats import norm

    z = float(norm.ppf(0.5 + confidence / 2))
    weights = np.array([c.chats for c in cells], dtype=np.float64) / sum(c.chats for c in cells)
    estimate = float(weights @ [p.estimate for p in parts])
    se = math.sqrt(float(weights**2 @ [((p.high - p.low) / (2 * z)) ** 2 for p in parts]))
    return MeanEstimate(method=method, estimate=estimate, low=estimate - z * se, high=estimate + z * se,
                        confidence=confidence, n_labelled=n, n_unlabelled=big_n, strata=len(parts))
