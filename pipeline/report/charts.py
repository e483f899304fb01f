"""Chart geometry for the HTML report: the inline SVGs' scales, rows, cells and bars, computed here so the
templates only draw (pipeline/report/templates/_charts.html)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.agreement.results import PairAgreement
from pipeline.agreement.verdict import VerdictThresholds
from pipeline.consistency.results import CriterionCheck
from pipeline.report.messages import Lang, message, number


@dataclass(frozen=True)
class Scale:
    """A linear map from values to x pixels, clipping at both ends."""

    lo: float
    hi: float
    x0: float
    x1: float

    def x(self, value: float) -> float:
        """The pixel for `value`, clipped into the chart."""
        v = min(max(value, self.lo), self.hi)
        return round(self.x0 + (v - self.lo) / (self.hi - self.lo) * (self.x1 - self.x0), 1)

    def ticks(self, step: float) -> list[tuple[float, str]]:
        """Gridline positions and labels every `step`."""
        n = round((self.hi - self.lo) / step)
        return [(self.x(self.lo + i * step), f"{self.lo + i * step:g}") for i in range(n + 1)]


class IntervalRow(NamedTuple):
    """One row of an interval chart."""

    label: str
    y: float
    estimate: float | None
    low: float | None
    high: float | None
    markers: list[tuple[str, float]]
    """(kind, x) of reference marks, e.g. the human ceiling."""
    title: str


class IntervalChart(NamedTuple):
    """An estimate-and-interval chart, one row per criterion."""

    width: int
    height: int
    left: int
    rows: list[IntervalRow]
    ticks: list[tuple[float, str]]
    lines: list[tuple[float, str]]
    """(x, label) of threshold lines."""


class HeatCell(NamedTuple):
    """One cell of a confusion heatmap."""

    x: int
    y: int
    n: int
    fill: str
    ink: str


class Heatmap(NamedTuple):
    """A confusion matrix drawn as a heatmap: rows the judge's level, columns the human's."""

    size: int
    cell: int
    offset: int
    levels: list[str]
    cells: list[HeatCell]


class Bar(NamedTuple):
    """A bar of a distribution chart."""

    x: int
    y: float
    height: float
    n: int
    who: str


class Distribution(NamedTuple):
    """Judge and human counts per level."""

    width: int
    height: int
    base: int
    bars: list[Bar]
    labels: list[tuple[int, str]]


def kappa_chart(criteria: Sequence[CriterionCheck], thresholds: VerdictThresholds, lang: Lang = "zh") -> IntervalChart:
    """Weighted kappa with its interval per criterion, the human ceiling marked beside it."""
    left, width, step = 170, 640, 26
    scale = Scale(-1.0, 1.0, left, width - 30)
    rows = []
    for i, c in enumerate(criteria):
        wk = c.judge_vs_human.metrics.weighted_kappa
        markers = []
        if c.human_ceiling is not None:
            ceiling = c.human_ceiling
            for kind, humans in (("pairwise", ceiling.pairwise), ("consensus", ceiling.vs_consensus)):
                if not math.isnan(humans.mean.weighted_kappa):
                    markers.append((kind, scale.x(humans.mean.weighted_kappa)))
        rows.append(IntervalRow(
            label=c.name, y=30 + i * step, estimate=_x(scale, wk.estimate), low=_x(scale, wk.low),
            high=_x(scale, wk.high), markers=markers,
            title=f"{c.criterion_id}: κw {number(wk.estimate)} [{number(wk.low)}, {number(wk.high)}]",
        ))
    lines = [(scale.x(thresholds.trusted_estimate), message("verdict.trusted", lang)),
             (scale.x(thresholds.not_trusted_below), message("verdict.not trusted", lang))]
    return IntervalChart(width, 40 + len(criteria) * step, left, rows, scale.ticks(0.5), lines)


def bias_chart(criteria: Sequence[CriterionCheck], lang: Lang = "zh") -> IntervalChart:
    """Mean judge − human per criterion as a share of the criterion's maximum, with its interval."""
    left, width, step = 170, 640, 26
    extent = 0.25
    for c in criteria:
        b = c.judge_vs_human.metrics.bias
        for v in (b.low, b.high, b.estimate):
            if not math.isnan(v):
                extent = max(extent, math.ceil(abs(v) / c.max_points * 4) / 4)
    scale = Scale(-extent, extent, left, width - 30)
    rows = []
    for i, c in enumerate(criteria):
        b = c.judge_vs_human.metrics.bias
        share = [v / c.max_points for v in (b.estimate, b.low, b.high)]
        rows.append(IntervalRow(
            label=c.name, y=30 + i * step, estimate=_x(scale, share[0]), low=_x(scale, share[1]),
            high=_x(scale, share[2]), markers=[],
            title=message("chart.bias_title", lang, item=c.criterion_id, bias=number(b.estimate), low=number(b.low),
                          high=number(b.high), max=c.max_points),
        ))
    ticks = scale.ticks(extent / 2 if extent >= 0.5 else extent)
    return IntervalChart(width, 40 + len(criteria) * step, left, rows, ticks, [(scale.x(0), "0")])


def _x(scale: Scale, v: float) -> float | None:
    return None if math.isnan(v) else scale.x(v)


def heatmap(pair: PairAgreement, cell: int = 34) -> Heatmap:
    """The confusion matrix, shaded by each cell's share of the largest cell."""
    top = max((n for row in pair.confusion for n in row), default=0) or 1
    cells = []
    for i, row in enumerate(pair.confusion):
        for j, n in enumerate(row):
            shade = n / top
            rgb = tuple(round(255 - shade * (255 - c)) for c in (37, 99, 235))
            cells.append(HeatCell(x=j * cell, y=i * cell, n=n, fill=f"rgb{rgb}",
                                  ink="#fff" if shade > 0.55 else "#1f2937"))
    levels = [f"{v:g}" for v in pair.levels]
    return Heatmap(size=len(levels) * cell, cell=cell, offset=34, levels=levels, cells=cells)


def distribution(pair: PairAgreement) -> Distribution:
    """Judge and human counts per level on the transcripts both scored (the confusion's margins)."""
    judge = [sum(row) for row in pair.confusion]
    human = [sum(col) for col in zip(*pair.confusion, strict=True)] if pair.confusion else []
    top = max([*judge, *human, 1])
    group, bar, base, tall = 36, 14, 110, 90
    bars, labels = [], []
    for k, level in enumerate(pair.levels):
        x = 10 + k * group
        for offset, who, n in ((0, "judge", judge[k]), (bar + 2, "human", human[k])):
            h = round(n / top * tall, 1)
            bars.append(Bar(x=x + offset, y=base - h, height=h, n=n, who=who))
        labels.append((x + bar, f"{level:g}"))
    return Distribution(width=20 + len(pair.levels) * group, height=base + 20, base=base, bars=bars, labels=labels)
