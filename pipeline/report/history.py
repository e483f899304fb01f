"""Each criterion's agreement across periodic checks, oldest first: the table and chart of `kefu report --history`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from pipeline.consistency.results import CheckResult
from pipeline.grading.fingerprint import fingerprint_differences
from pipeline.report.charts import IntervalChart, IntervalRow, Scale
from pipeline.report.messages import Lang
from pipeline.report.render import render
from pipeline.report.result_file import load_result

HISTORY = "history"


class HistoryCell(NamedTuple):
    """One criterion in one check."""

    estimate: float
    low: float
    high: float
    verdict: str | None


class HistoryColumn(NamedTuple):
    """One check of the history."""

    folder: str
    result: CheckResult
    judge_changes: list[str]
    """How its judge differs from the previous check's; empty for the first and for the same judge."""


def history_columns(folders: Sequence[Path]) -> list[HistoryColumn]:
    """The checks in these folders, oldest first, each with what changed in its judge."""
    from pipeline.report.result_file import AGREEMENT_JSON

    loaded = sorted(((str(f), load_result(f / AGREEMENT_JSON)) for f in folders), key=lambda x: x[1].created_at)
    columns = []
    for i, (folder, result) in enumerate(loaded):
        before = loaded[i - 1][1] if i else None
        changes = []
        if before is not None and before.judge is not None and result.judge is not None:
            changes = fingerprint_differences(before.judge, result.judge)
        elif before is not None and before.model != result.model:
            changes = [f"模型：{before.model} → {result.model}"]
        columns.append(HistoryColumn(folder, result, changes))
    return columns


def history_cells(columns: Sequence[HistoryColumn]) -> dict[str, list[HistoryCell | None]]:
    """Criterion id → its weighted kappa and verdict in each check (None where the check lacks it)."""
    ids: list[str] = []
    for col in columns:
        ids += [c.criterion_id for c in col.result.criteria if c.criterion_id not in ids]
    out: dict[str, list[HistoryCell | None]] = {}
    for cid in ids:
        row: list[HistoryCell | None] = []
        for col in columns:
            c = next((x for x in col.result.criteria if x.criterion_id == cid), None)
            wk = c.judge_vs_human.metrics.weighted_kappa if c else None
            row.append(HistoryCell(wk.estimate, wk.low, wk.high, c.verdict) if c and wk else None)
        out[cid] = row
    return out


def history_chart(columns: Sequence[HistoryColumn], cells: Sequence[HistoryCell | None]) -> IntervalChart:
    """One criterion's weighted kappa with its interval, one row per check, oldest on top."""
    left, width, step = 170, 640, 26
    scale = Scale(-1.0, 1.0, left, width - 30)
    rows = []
    for i, (col, cell) in enumerate(zip(columns, cells, strict=True)):
        def x(v: float | None) -> float | None:
            return None if v is None or math.isnan(v) else scale.x(v)

        rows.append(IntervalRow(
            label=col.result.created_at.strftime("%Y-%m-%d") + (" *" if col.judge_changes else ""),
            y=30 + i * step, estimate=x(cell.estimate if cell else None), low=x(cell.low if cell else None),
            high=x(cell.high if cell else None), markers=[],
            title=f"{col.folder}: κw {cell.estimate:.2f}" if cell and not math.isnan(cell.estimate) else col.folder,
        ))
    return IntervalChart(width, 40 + len(columns) * step, left, rows, scale.ticks(0.5), [(scale.x(0), "0")])


def write_history(folders: Sequence[Path], out_dir: Path, lang: Lang = "zh") -> list[Path]:
    """history.md and history.html in `out_dir` for the checks in `folders`, in `lang`."""
    columns = history_columns(folders)
    cells = history_cells(columns)
    charts = {cid: history_chart(columns, row) for cid, row in cells.items()}
    names = {c.criterion_id: c.name for col in columns for c in col.result.criteria}
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{HISTORY}.md", out_dir / f"{HISTORY}.html"]
    for path in paths:
        path.write_text(render(path.name, columns=columns, cells=cells, kappa_charts=charts, names=names,
                               lang=lang), encoding="utf-8")
    return paths
