"""Per group of a run, the judge-only, PPI-corrected and labelled-only means of the total and each criterion.

Scores are the judge's repeat 0, raw per criterion (labels are per criterion, so caps and critical items,
which `kefu summary`'s own columns apply, are left out here); the total is the plain sum of the criteria,
empty when any is missing, on both sides. A chat's human score is the mean of its raters. PPI needs the
labelled chats to be a uniform random sample of each group (`kefu sample` draws one); when it cannot be
shown that they are, `warning` says so and the PPI figures are not to be trusted. When the sample was
stratified (`strata`), every row's PPI and labelled-only means weight the strata by their share of the
row's chats (`agreement.ppi.stratified_mean`): the whole run's row then stays right even where the strata
were sampled at different rates; a plain random sample is pooled as one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping

import numpy as np
import numpy.typing as npt
from pydantic import Field

from pipeline.agreement.ppi import MeanEstimate, Stratum, classical_mean, ppi_mean, stratified_mean
from pipeline.inputs.labels import LabelSet
from pipeline.models.strict import StrictModel
from pipeline.outputs.exports import ScoreRow
from pipeline.rubric.model import Rubric

TOTAL = "total"
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


class GroupMean(StrictModel):
    """One group's mean of one item three ways."""

    group: str | None = Field(description="The group; None when unknown; '*' for every chat of the run.")
    item: str = Field(description="A criterion id, or 'total' (the sum of the criteria).")
    chats: int = Field(description="Chats of the group with a judge score for the item.")
    judge_only: MeanEstimate = Field(description="The judge's mean over every chat of the group.")
    ppi: MeanEstimate = Field(description="The judge corrected by the labelled chats (prediction-powered).")
    labelled_only: MeanEstimate = Field(description="The humans' mean over the labelled chats alone.")


def estimate_columns(m: GroupMean, by: str) -> dict[str, object]:
    """Flat values for one CSV row, rounded to 4 decimals."""
    out: dict[str, object] = {by: m.group, "item": m.item, "chats": m.chats, "labelled": m.ppi.n_labelled}
    for name, e in (("judge", m.judge_only), ("ppi", m.ppi), ("labelled", m.labelled_only)):
        out |= {f"{name}_mean": _round(e.estimate), f"{name}_low": _round(e.low), f"{name}_high": _round(e.high)}
    return out


def _round(value: float) -> float | None:
    return None if math.isnan(value) else round(value, 4)


class RunEstimates(StrictModel):
    """The three means per group and item, and whether the labelled chats allow PPI."""

    by: str = Field(description="What the groups are (agent, shop, platform, day).")
    labelled: int = Field(description="Chats of the run with at least one human score.")
    random_sample: bool = Field(description="The labelled chats are known to be a random sample (from `kefu sample`).")
    stratified_by: str | None = Field(
        default=None, description="What the sample was stratified by (its strata weighted); None: pooled as one.")
    warning: str | None = Field(description="Why the PPI figures may not hold, in Chinese; None when they do.")
    means: list[GroupMean] = Field(description="Per group (the run as a whole first, '*'), total then criteria.")


def _judge_scores(rows: Iterable[ScoreRow], rubric: Rubric) -> dict[str, dict[str, float]]:
    """Transcript → item → the judge's repeat-0 points (NaN when unscored)."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.repeat == 0:
            values = {c.id: math.nan if (v := row.scores.get(c.id)) is None else float(v) for c in rubric.criteria()}
            values[TOTAL] = float(sum(values.values()))  # NaN propagates
            out[row.transcript_id] = values
    return out


def _human_scores(labels: LabelSet, rubric: Rubric) -> dict[str, dict[str, float]]:
    """Transcript → item → the mean of its raters."""
    out: dict[str, dict[str, float]] = {}
    for c in rubric.criteria():
        units, _, scores = labels.matrix(c.id)
        with np.errstate(all="ignore"):
            means = np.nanmean(scores, axis=1) if len(units) else np.array([])
        for u, m in zip(units, means, strict=True):
            out.setdefault(u, {})[c.id] = float(m)
    for values in out.values():
        values[TOTAL] = float(sum(values.get(c.id, math.nan) for c in rubric.criteria()))
    return out


def sample_warning(labelled: Collection[str], sample: Collection[str] | None) -> str | None:
    """Why the labelled chats cannot be taken for a random sample, or None when they can."""
    if sample is None:
        return ("未提供抽样清单（kefu sample 的 --to 文件）：无法确认已标注的对话是随机抽取的，"
                "PPI 校正均值及其区间的前提可能不成立")
    outside = set(labelled) - set(sample)
    if outside:
        return f"有 {len(outside)} 条已标注的对话不在抽样清单中：已标注的对话不是随机样本，PPI 校正均值不可靠"
    missing = set(sample) - set(labelled)
    if missing:
        return (f"抽样清单中有 {len(missing)} 条对话未标注：若漏标与对话好坏有关，"
                "样本就不再随机，PPI 校正均值可能有偏")
    return None


def _strata(ids: list[str], strata: Mapping[str, str | None], f: FloatArray, y: FloatArray,
            is_labelled: BoolArray) -> list[Stratum]:
    """The row's chats split by the sample's strata, each as labelled (human, judge) and unlabelled judge scores."""
    cells: dict[str | None, list[int]] = {}
    for i, tid in enumerate(ids):
        cells.setdefault(strata.get(tid), []).append(i)
    out = []
    for members in cells.values():
        at = np.array(members)
        mine = is_labelled[at]
        out.append(Stratum(y[at][mine], f[at][mine], f[at][~mine]))
    return out


def estimate_means(
    rows: Iterable[ScoreRow], rubric: Rubric, labels: LabelSet, groups: Mapping[str, str | None], by: str,
    *, sample: Collection[str] | None = None, strata: Mapping[str, str | None] | None = None,
    stratified_by: str | None = None, confidence: float = 0.95,
) -> RunEstimates:
    """The three means per group (and for the whole run) of the total and each criterion; `strata` (transcript
    → the stratum `kefu sample --by stratified_by` drew it from) weights the PPI and labelled-only means."""
    judge = _judge_scores(rows, rubric)
    human = _human_scores(labels, rubric)
    labelled = {t for t in human if t in judge}
    members: dict[str | None, list[str]] = {"*": sorted(judge)}
    for tid in sorted(judge):
        members.setdefault(groups.get(tid), []).append(tid)
    means = []
    items = [TOTAL, *(c.id for c in rubric.criteria())]
    for group, ids in members.items():
        for item in items:
            f = np.array([judge[t][item] for t in ids])
            is_labelled = np.array([t in labelled for t in ids], dtype=bool)
            y = np.array([human[t].get(item, math.nan) if t in labelled else math.nan for t in ids])
            if strata is None:
                ppi = ppi_mean(y[is_labelled], f[is_labelled], f[~is_labelled], confidence=confidence)
                labelled_only = classical_mean(y, method="labelled only", confidence=confidence)
            else:
                cells = _strata(ids, strata, f, y, is_labelled)
                ppi = stratified_mean(cells, method="ppi", confidence=confidence)
                labelled_only = stratified_mean(cells, method="labelled only", confidence=confidence)
            means.append(GroupMean(
                group=group, item=item, chats=int(np.sum(~np.isnan(f))),
                judge_only=classical_mean(f, method="judge only", confidence=confidence),
                ppi=ppi, labelled_only=labelled_only,
            ))
    warning = sample_warning(labelled, sample)
    return RunEstimates(by=by, labelled=len(labelled), random_sample=warning is None,
                        stratified_by=stratified_by if strata is not None else None, warning=warning, means=means)
