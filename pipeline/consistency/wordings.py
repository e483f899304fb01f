"""Two wordings of a rubric on the same labelled transcripts: which agrees better with the humans.

Two wordings are graded separately; per criterion the change in weighted kappa (and every compared
metric) has a *paired* bootstrap interval: each resample draws the same transcripts for both wordings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from pipeline.agreement.compare import paired_deltas
from pipeline.agreement.results import CI, PairedDelta
from pipeline.consistency.job import CheckJob, CheckRun, run_check
from pipeline.consistency.results import DEFAULT_OPTIONS, SCHEMA_VERSION, CheckOptions
from pipeline.grading.endpoints import ResolvedEndpoint
from pipeline.grading.runner import ProgressSink
from pipeline.grading.settings import Settings
from pipeline.models.strict import StrictModel
from pipeline.report.messages import Lang, Message, message, note, number
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric

WORDING_METRICS = ("weighted_kappa", "exact", "mae", "bias", "spearman")
"""The metrics two wordings of a rubric are compared on, each with a paired interval."""
HIGHER_IS_BETTER = {"weighted_kappa": True, "exact": True, "spearman": True, "mae": False}
"""Metrics where one direction is better; bias is read by its distance from 0 and only reported."""
FlipDirection = Literal["towards", "away", "both wrong"]


class RubricRef(StrictModel):
    """One rubric of a comparison."""

    rubric_id: str = Field(description="Rubric id.")
    version: str = Field(description="Rubric version.")
    name: str = Field(description="Display name.")
    path: str = Field(description="The rubric file.")
    label: str = Field(description="The wording's name for people: the file name.")
    rubric_hash: str = Field(description="Content hash.")
    folder: str = Field(description="The sub-folder holding this rubric's store and reports.")


class Flip(StrictModel):
    """A transcript whose judge grade changed between the two wordings."""

    transcript_id: str = Field(description="The transcript.")
    score_a: int = Field(description="Points under rubric A (repeat 0).")
    score_b: int = Field(description="Points under rubric B (repeat 0).")
    human: float = Field(description="The human points (under rubric B's labels, consensus with several raters).")
    direction: FlipDirection = Field(
        description="B moved towards the human (closer than A), away (farther), or both wrong (equally far)."
    )
    moved: float = Field(description="|A − human| − |B − human| in points: positive towards the human.")
    level_a: str = Field(default="", description="Rubric A's description of the level A gave.")
    level_b: str = Field(default="", description="Rubric B's description of the level B gave.")


class CriterionShift(StrictModel):
    """How one criterion's agreement with the humans moved from wording A to wording B."""

    criterion_id: str = Field(description="Criterion id, the same in both rubrics.")
    name_a: str = Field(description="Display name in A.")
    name_b: str = Field(description="Display name in B.")
    n: int = Field(description="Transcripts with a human score and a judge score under both wordings.")
    left_out: list[str] = Field(
        default=[], description="Transcripts labelled for both wordings but missing a judge or human score."
    )
    weighted_kappa_a: float = Field(description="Weighted kappa under A on those transcripts.")
    weighted_kappa_b: float = Field(description="Weighted kappa under B on those transcripts.")
    delta: CI = Field(description="B − A with a paired bootstrap interval (same transcripts in each resample).")
    metrics: list[PairedDelta] = Field(
        default=[], description="Every compared metric under A and B, and B − A with a paired interval."
    )
    sentence: str = Field(default="", description="Which wording is better, by how much and how sure, in Chinese.")
    flips: list[Flip] = Field(description="Of the n transcripts, those graded differently, largest move first.")


class RubricComparison(StrictModel):
    """Rubric A against rubric B on the same labelled transcripts."""

    schema_version: Literal[1] = Field(default=SCHEMA_VERSION, description="Bumped when this layout changes.")
    created_at: datetime = Field(description="When it was computed (UTC).")
    model: str = Field(description="The judge model (the same for both).")
    a: RubricRef = Field(description="The first rubric.")
    b: RubricRef = Field(description="The second rubric.")
    options: CheckOptions = Field(description="Bootstrap settings used.")
    criteria: list[CriterionShift] = Field(description="Criteria present in both rubrics, in A's order.")
    only_in_a: list[str] = Field(description="Criterion ids only A has.")
    only_in_b: list[str] = Field(description="Criterion ids only B has.")
    notes: list[Message] = Field(description="Things a reader should know about this comparison, as messages.")


def rubric_folders(out_dir: Path, rubric_paths: Sequence[Path]) -> list[Path]:
    """One sub-folder of OUT per rubric, named after the file; numbered when two files share a name."""
    stems = [p.stem for p in rubric_paths]
    return [out_dir / (s if stems.count(s) == 1 else f"{i + 1}-{s}") for i, s in enumerate(stems)]


def _flip(tid: str, a: float, b: float, h: float, levels: tuple[dict[int, str], dict[int, str]]) -> Flip:
    moved = abs(a - h) - abs(b - h)
    direction: FlipDirection = "towards" if moved > 0 else "away" if moved < 0 else "both wrong"
    return Flip(transcript_id=tid, score_a=int(a), score_b=int(b), human=h, direction=direction, moved=moved,
                level_a=levels[0].get(int(a), ""), level_b=levels[1].get(int(b), ""))


def _level_texts(rubric: Rubric | None, cid: str) -> dict[int, str]:
    if rubric is None:
        return {}
    return {lv.points: lv.description for lv in rubric.criterion(cid).levels_ascending()}


def shift_sentence(deltas: Sequence[PairedDelta], label_a: str, label_b: str, lang: Lang = "zh") -> str:
    """Which wording is better on the metrics whose interval excludes 0, and where they disagree (in `lang`)."""
    def detail(d: PairedDelta) -> str:
        return message("ab.detail", lang, metric=message(f"metric.{d.metric}", lang),
                       delta=number(d.delta.estimate, signed=True), low=number(d.delta.low, signed=True),
                       high=number(d.delta.high, signed=True))

    better = [d for d in deltas if d.metric in HIGHER_IS_BETTER
              and (d.delta.low > 0 if HIGHER_IS_BETTER[d.metric] else d.delta.high < 0)]
    worse = [d for d in deltas if d.metric in HIGHER_IS_BETTER
             and (d.delta.high < 0 if HIGHER_IS_BETTER[d.metric] else d.delta.low > 0)]
    if better and worse:
        head = message("ab.mixed", lang, better=message("join.list", lang).join(detail(d) for d in better),
                       worse=message("join.list", lang).join(detail(d) for d in worse))
    elif better or worse:
        head = message("ab.better", lang, wording=label_b if better else label_a,
                       details=message("join.list", lang).join(detail(d) for d in better or worse))
    else:
        kappa = next((d for d in deltas if d.metric == "weighted_kappa"), None)
        head = message("ab.no_difference", lang, details=detail(kappa) if kappa else "")
    bias = next((d for d in deltas if d.metric == "bias"), None)
    if bias is not None and not math.isnan(bias.a):
        head += message("ab.bias", lang, a=number(bias.a, signed=True), b=number(bias.b, signed=True))
    return head


def compare_rubrics(a: CheckRun, b: CheckRun, options: CheckOptions = DEFAULT_OPTIONS,
                    rubrics: tuple[Rubric, Rubric] | None = None) -> RubricComparison:
    """Per shared criterion, every compared metric from A to B with a paired bootstrap interval, a sentence
    saying which wording is better, and the flipped transcripts grouped by whether B moved towards the humans.
    `rubrics` (A's and B's) adds each flipped grade's level descriptions."""
    shared = [cid for cid in a.scores.judge if cid in b.scores.judge]
    index_b = {u: i for i, u in enumerate(b.scores.units)}
    common = [u for u in a.scores.units if u in index_b]
    ia = np.array([a.scores.units.index(u) for u in common], dtype=np.int64)
    ib = np.array([index_b[u] for u in common], dtype=np.int64)
    names_a = {c.criterion_id: c.name for c in a.result.criteria}
    names_b = {c.criterion_id: c.name for c in b.result.criteria}
    label_a, label_b = _label(a), _label(b)
    shifts = []
    for cid in shared:
        ja, ha = a.scores.judge[cid][ia], a.scores.human[cid][ia]
        jb, hb = b.scores.judge[cid][ib], b.scores.human[cid][ib]
        mean_b = b.scores.human_mean.get(cid, b.scores.human[cid])[ib]
        keep = ~(np.isnan(ja) | np.isnan(ha) | np.isnan(jb) | np.isnan(hb))
        n, deltas = paired_deltas(ja, jb, np.where(keep, hb, np.nan), a.scores.levels[cid], b.scores.levels[cid],
                                     WORDING_METRICS, human_numeric=mean_b, n_resamples=options.n_resamples,
                                     seed=options.seed, confidence=options.confidence)
        kappa = deltas[0]
        texts = (_level_texts(rubrics[0], cid), _level_texts(rubrics[1], cid)) if rubrics else ({}, {})
        flips = [_flip(common[k], ja[k], jb[k], hb[k], texts) for k in range(len(common)) if keep[k] and ja[k] != jb[k]]
        flips.sort(key=lambda f: (-abs(f.moved), f.transcript_id))
        shifts.append(CriterionShift(
            criterion_id=cid, name_a=names_a[cid], name_b=names_b[cid], n=n,
            left_out=[u for u, k, h in zip(common, keep, hb, strict=True) if not k and not np.isnan(h)],
            weighted_kappa_a=kappa.a, weighted_kappa_b=kappa.b, delta=kappa.delta, metrics=deltas,
            sentence=shift_sentence(deltas, label_a, label_b), flips=flips,
        ))
    compared = max((s.n for s in shifts), default=0)
    notes = [note("note.compared", n=compared)]
    if a.result.model != b.result.model:
        notes.append(note("note.two_models", a=a.result.model, b=b.result.model))
    return RubricComparison(
        created_at=datetime.now(UTC), model=b.result.model, a=_ref(a), b=_ref(b), options=options, notes=notes,
        criteria=shifts, only_in_a=[c for c in a.scores.judge if c not in b.scores.judge],
        only_in_b=[c for c in b.scores.judge if c not in a.scores.judge],
    )


def _label(run: CheckRun) -> str:
    return Path(run.result.rubric_path).name


def _ref(run: CheckRun) -> RubricRef:
    r = run.result
    return RubricRef(rubric_id=r.rubric_id, version=r.rubric_version, name=r.rubric_name, path=r.rubric_path,
                     label=_label(run), rubric_hash=r.rubric_hash, folder=str(run.out_dir))


@dataclass(frozen=True)
class ComparisonRun:
    """Two checks of the same labelled set and how they differ."""

    runs: tuple[CheckRun, CheckRun]
    comparison: RubricComparison


async def run_comparison(
    job: CheckJob,
    rubric_b: Path,
    settings: Settings,
    *,
    options: CheckOptions = DEFAULT_OPTIONS,
    progress: ProgressSink | None = None,
    on_endpoint: Callable[[ResolvedEndpoint], None] | None = None,
) -> ComparisonRun:
    """Check `job.rubric_path` and `rubric_b` on the same labels, each in its own sub-folder of `job.out_dir`."""
    folders = rubric_folders(job.out_dir, [job.rubric_path, rubric_b])
    runs = []
    for path, folder in zip((job.rubric_path, rubric_b), folders, strict=True):
        runs.append(await run_check(replace(job, rubric_path=path, out_dir=folder), settings, options=options,
                                    progress=progress, on_endpoint=on_endpoint))
    a, b = runs
    rubrics = (load_rubric(job.rubric_path), load_rubric(rubric_b))
    return ComparisonRun(runs=(a, b), comparison=compare_rubrics(a, b, options, rubrics))
