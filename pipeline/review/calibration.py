"""Calibration: how far reviewers agree with each other and with the judge, per criterion, and where they differ.

The statistics are the checker's (`agreement.pairwise_human_agreement`): every pair among the
reviewers and the judge, on the chats both scored. The judge's score is its own (the LLM's, repeat 0,
before caps, critical items and decisions), as `kefu check` compares it; reviewers' scores are their
current labels, read and checked as `kefu check --labels OUT` reads them.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from pipeline.agreement.raters import pairwise_human_agreement
from pipeline.agreement.results import HumanAgreement
from pipeline.inputs.labels import read_label_source
from pipeline.review.runs import ReviewRun

JUDGE = "评判模型"


@dataclass
class Difference:
    transcript_id: str
    scores: list[float | None]
    """One per column of `CriterionCalibration.raters`, None where that side did not score."""


@dataclass
class CriterionCalibration:
    criterion_id: str
    name: str
    raters: list[str]
    """The reviewers, sorted, then the judge."""
    agreement: HumanAgreement | None
    """None when no two sides scored a chat in common."""
    differences: list[Difference]


def calibrate(run: ReviewRun, only: Collection[str] | None = None) -> list[CriterionCalibration]:
    """Per criterion with labels: the pairwise agreement of reviewers and judge, and the chats they differ on."""
    labels = read_label_source(run.folder, run.rubric)
    chosen = [x for x in labels.labels if only is None or x.transcript_id in only]
    if not chosen:
        return []
    judged = _judge_scores(run, {x.transcript_id for x in chosen})
    out = []
    for criterion in run.rubric.criteria():
        mine = [x for x in chosen if x.criterion_id == criterion.id]
        if not mine:
            continue
        units = sorted({x.transcript_id for x in mine})
        raters = sorted({x.rater_id for x in mine})
        matrix = np.full((len(units), len(raters) + 1), np.nan)
        row, col = {u: i for i, u in enumerate(units)}, {r: j for j, r in enumerate(raters)}
        for x in mine:
            matrix[row[x.transcript_id], col[x.rater_id]] = x.score
        for u in units:
            score = judged.get(u, {}).get(criterion.id)
            matrix[row[u], -1] = np.nan if score is None else score
        result = pairwise_human_agreement(matrix, criterion.points, rater_ids=[*raters, JUDGE])
        differences = [
            Difference(u, [None if np.isnan(v) else float(v) for v in matrix[i]])
            for i, u in enumerate(units) if len(set(matrix[i][~np.isnan(matrix[i])])) > 1
        ]
        out.append(CriterionCalibration(criterion.id, criterion.name, [*raters, JUDGE],
                                        result if result.comparisons else None, differences))
    return out


def _judge_scores(run: ReviewRun, transcript_ids: set[str]) -> dict[str, dict[str, int | None]]:
    """The LLM's own scores of repeat 0 of these chats."""
    out: dict[str, dict[str, int | None]] = {}
    with run.store() as store:
        for tid in sorted(transcript_ids):
            for grade in store.transcript_grade_rows(tid, rubric_hash=run.rubric_hash):
                if grade.repeat == 0:
                    out.setdefault(tid, {}).update(
                        (cg["criterion_id"], cg["score"]) for cg in json.loads(grade.criteria))
    return out
