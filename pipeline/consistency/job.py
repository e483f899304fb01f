"""The check job: from a label file and the inputs to the stored, graded scores a check compares.

`run_check` reads the human labels, has every labelled transcript graded `repeats` times (through
the resumable grading job, so a rerun sends no request), and `assess` (pipeline/consistency/assess.py)
turns the stored grades and the labels into a `CheckResult`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from pipeline.consistency.assess import assess
from pipeline.consistency.results import DEFAULT_OPTIONS, CheckOptions, CheckResult, JudgeScores, UnitScores
from pipeline.errors import ConfigError, InputError
from pipeline.grading.endpoints import ResolvedEndpoint
from pipeline.grading.fingerprint import JudgeFingerprint, run_fingerprint
from pipeline.grading.job import GradeJob, JobResult, read_job_inputs, run_job
from pipeline.grading.runner import ProgressSink
from pipeline.grading.settings import Settings
from pipeline.inputs.labels import LabelSet, read_label_source
from pipeline.inputs.rejects import reject_line
from pipeline.models.transcript import Transcript
from pipeline.outputs.exports import iter_score_rows
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import DB_NAME, Store

LABEL_REJECTS = "label_rejects.jsonl"


@dataclass(frozen=True)
class CheckRun:
    """A check's result with the run folder and grading job that produced it."""

    result: CheckResult
    scores: UnitScores
    out_dir: Path
    grading: JobResult | None = None
    """None when the check read grades made elsewhere (`check_graded` without one)."""


@dataclass(frozen=True)
class CheckJob:
    """What to check and where the results go; the grading knobs mirror GradeJob."""

    inputs: Sequence[Path]
    rubric_path: Path
    labels_path: Path
    out_dir: Path
    repeats: int = 2
    only_ids: Collection[str] | None = None
    """Check only these transcripts (of the labelled ones); None checks every labelled transcript."""
    per_criterion: bool = False
    retry_failed: bool = False
    shop_speakers: Collection[str] = ()
    bot_speakers: Collection[str] = ()
    shop_prefixes: Sequence[str] = ()
    prompts_dir: Path | None = None
    redact: bool | None = None
    """Replace personal data before sending; None decides by the endpoint, as for `kefu grade`."""

    def grade_job(self, labelled: Collection[str]) -> GradeJob:
        """The grading job that gives every labelled transcript its repeats."""
        return GradeJob(
            inputs=self.inputs, rubric_path=self.rubric_path, out_dir=self.out_dir, repeats=self.repeats,
            per_criterion=self.per_criterion, retry_failed=self.retry_failed,
            shop_speakers=self.shop_speakers, bot_speakers=self.bot_speakers,
            shop_prefixes=self.shop_prefixes, only_ids=set(labelled), prompts_dir=self.prompts_dir,
            redact=self.redact,
        )


# --- the run ----------------------------------------------------------------------------------


def read_check_labels(job: CheckJob, rubric: Rubric) -> LabelSet:
    """The job's labels of transcripts in its inputs (and `only_ids`); rejects go to OUT/label_rejects.jsonl."""
    known = {item.id for item in read_job_inputs(job.grade_job(())) if isinstance(item, Transcript)}
    labels = read_label_source(job.labels_path, rubric, known_transcripts=known)
    if job.only_ids is not None:  # left out on purpose, so not rejects
        labels = LabelSet(labels=[x for x in labels.labels if x.transcript_id in job.only_ids],
                          rejects=labels.rejects)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    with (job.out_dir / LABEL_REJECTS).open("w", encoding="utf-8") as fh:
        for reject in labels.rejects:
            fh.write(reject_line(reject))
    if not labels.labels:
        raise InputError(
            str(job.labels_path),
            f"no usable label: {len(labels.rejects)} line(s) rejected, see {job.out_dir / LABEL_REJECTS}",
        )
    return labels


async def run_check(
    job: CheckJob,
    settings: Settings,
    *,
    options: CheckOptions = DEFAULT_OPTIONS,
    progress: ProgressSink | None = None,
    on_endpoint: Callable[[ResolvedEndpoint], None] | None = None,
) -> CheckRun:
    """Grade every labelled transcript `job.repeats` times (resumable) and compare with the labels."""
    rubric = load_rubric(job.rubric_path)
    labels = read_check_labels(job, rubric)
    labelled = labels.transcripts()
    if settings.endpoint_configured:  # before paying for grades that could not be used
        _require_one_model(job.out_dir, rubric, settings.model)
    graded = await run_job(job.grade_job(labelled), settings, progress=progress,
                           expected_transcripts=len(labelled), on_endpoint=on_endpoint)
    return check_graded(job, model=graded.model, options=options, grading=graded, labels=labels)


def check_graded(job: CheckJob, *, model: str, options: CheckOptions = DEFAULT_OPTIONS,
                 grading: JobResult | None = None, labels: LabelSet | None = None) -> CheckRun:
    """The check of grades already in `job.out_dir` (by `model`), without grading or starting an endpoint.

    For callers that have just graded the labelled transcripts themselves, e.g. `kefu demo`. `labels`
    saves reading the label file again when the caller already has `read_check_labels(job, …)`.
    """
    rubric = load_rubric(job.rubric_path)
    labels = labels if labels is not None else read_check_labels(job, rubric)
    _require_one_model(job.out_dir, rubric, model)
    judge = stored_scores(job.out_dir, rubric, set(labels.transcripts()))
    result, scores = assess(rubric, labels, judge.scores, options=options, repeats=job.repeats, model=model,
                            rubric_path=str(job.rubric_path), grading=grading.summary if grading else None,
                            needs_review=judge.needs_review)
    result = result.model_copy(update={"judge": stored_fingerprint(job.out_dir)})
    return CheckRun(result=result, scores=scores, out_dir=job.out_dir, grading=grading)


def stored_fingerprint(out_dir: Path) -> JudgeFingerprint | None:
    """The fingerprint of the run folder's last grading run; None when nothing was graded there."""
    if not (out_dir / DB_NAME).exists():
        return None
    with Store.open(out_dir) as store:
        run = store.last_run()
    return None if run is None else run_fingerprint(run, json.loads(run["settings"]))


def read_chats(job: CheckJob, wanted: Collection[str]) -> dict[str, Transcript]:
    """These transcripts, read again from the job's inputs (for reports that show the chat)."""
    if not wanted:
        return {}
    return {t.id: t for t in read_job_inputs(job.grade_job(wanted)) if isinstance(t, Transcript) and t.id in wanted}


class StoredScores(NamedTuple):
    """A check folder's judge scores, and which of the chats need review."""

    scores: JudgeScores
    needs_review: set[str]
    """Transcripts a grade of which has prompt-injection hits (`needs_review` in scores.csv)."""


def stored_scores(out_dir: Path, rubric: Rubric, transcript_ids: Collection[str]) -> StoredScores:
    """The run folder's grades of `rubric` for these transcripts, by transcript and repeat."""
    scores: dict[str, dict[int, dict[str, int | None]]] = {}
    needs_review: set[str] = set()
    with Store.open(out_dir) as store:
        for row in iter_score_rows(store, rubric):
            if row.transcript_id in transcript_ids:
                scores.setdefault(row.transcript_id, {})[row.repeat] = dict(row.scores)
                if row.injection:
                    needs_review.add(row.transcript_id)
    return StoredScores(scores, needs_review)


def _require_one_model(out_dir: Path, rubric: Rubric, model: str) -> None:
    """Grades of one rubric by two models would be merged per transcript: refuse rather than mix them."""
    if not (out_dir / DB_NAME).exists():
        return
    with Store.open(out_dir) as store:
        others = {g.model for g in store.iter_grades(rubric_hash=rubric.content_hash)} - {model}
    if others:
        raise ConfigError(
            f"{out_dir} already holds grades of rubric {rubric.id} by {', '.join(sorted(others))}; "
            f"check model {model} in another --out folder"
        )
