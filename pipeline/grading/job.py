"""A grading job end to end: settings → endpoint → runner → store → scores.csv, grades.jsonl, checks.jsonl.

This is what `kefu grade` calls; it holds no concurrency (that is the runner's) and prints
nothing (that is the CLI's). When no endpoint is configured it asks `endpoints` for the embedded
local model. Personal data is redacted before anything is sent to an endpoint that is not this
machine (`redaction.is_loopback`); `GradeJob.redact` forces it on or off. The embedded local model
grades in compact mode (`schema` explains it); `GradeJob.compact` forces that on or off.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pipeline.checks.checker import DEFAULT_LEXICONS, ServiceChecker
from pipeline.grading.endpoints import ResolvedEndpoint, resolve_endpoint
from pipeline.grading.grader import Grader
from pipeline.grading.prompting import PromptSet
from pipeline.grading.redaction import RedactionConfig, is_loopback
from pipeline.grading.resume import LineMemo
from pipeline.grading.runner import ProgressSink, RunOptions, RunSummary, run_grading
from pipeline.grading.settings import Settings
from pipeline.inputs.files import input_size
from pipeline.inputs.transcripts import read_transcripts, read_unfinished
from pipeline.llm.client import LLMClient
from pipeline.llm.learned_limits import load_learned_limits, save_learned_limits
from pipeline.llm.pacing import Pacer
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Finished, Reject, Transcript
from pipeline.outputs.exports import refresh_outputs
from pipeline.outputs.provenance import JudgeProvenance
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store


@dataclass(frozen=True)
class GradeJob:
    """What to grade and where the results go."""

    inputs: Sequence[Path]
    rubric_path: Path
    out_dir: Path
    repeats: int = 1
    per_criterion: bool = False
    retry_failed: bool = False
    include_pending_batch: bool = False
    """Grade online what a batch not yet collected holds too (by default it is skipped, not paid for twice)."""
    shop_speakers: Collection[str] = ()
    bot_speakers: Collection[str] = ()
    shop_prefixes: Sequence[str] = ()
    only_ids: Collection[str] | None = None
    limit: int | None = None
    prompts_dir: Path | None = None
    lexicon_path: Path = DEFAULT_LEXICONS
    redact: bool | None = None
    """None: redact unless the endpoint is loopback; True/False: always / never."""
    compact: bool | None = None
    """None: compact output for the embedded local model only; True/False: always / never."""
    checked_by: Path | None = None
    """The check folder whose judge this run must be (`kefu grade --checked-by`); recorded in the run."""


@dataclass(frozen=True)
class JobResult:
    """What the CLI reports at the end."""

    summary: RunSummary
    scores_csv: Path
    grades_jsonl: Path
    checks_jsonl: Path
    rejects_jsonl: Path
    dimension_means: dict[str, float | None]
    needs_review: int
    model: str
    endpoint: ResolvedEndpoint
    judge: JudgeProvenance | None
    """Which judge graded, for the closing lines (pipeline/outputs/provenance.py)."""


def read_job_inputs(job: GradeJob) -> Iterator[Transcript | Reject]:
    """The job's inputs through the readers, with its speaker settings."""
    return read_transcripts(list(job.inputs), shop_speakers=job.shop_speakers, bot_speakers=job.bot_speakers,
                            shop_prefixes=job.shop_prefixes)


def read_unfinished_inputs(job: GradeJob, memo: LineMemo) -> Iterator[Transcript | Reject | Finished]:
    """`read_job_inputs`, with the JSON lines `memo` knows as finished coming out unparsed (grading/resume.py)."""
    return read_unfinished(list(job.inputs), memo, shop_speakers=job.shop_speakers, bot_speakers=job.bot_speakers,
                           shop_prefixes=job.shop_prefixes)


_Item = TypeVar("_Item", Transcript | Reject, Transcript | Reject | Finished)


def select(items: Iterable[_Item], only_ids: Collection[str] | None, limit: int | None) -> Iterator[_Item]:
    """Keep rejects, keep transcripts whose id is listed (if a list is given), stop after `limit`.

    A finished line counts as the transcript it is, so `--limit` covers the same chats on a resume.
    """
    taken = 0
    for item in items:
        if isinstance(item, Transcript | Finished):
            if only_ids is not None and item.id not in only_ids:
                continue
            if limit is not None and taken >= limit:
                return
            taken += 1
        yield item


def _load(job: GradeJob) -> tuple[Rubric, PromptSet, ServiceChecker]:
    rubric = load_rubric(job.rubric_path)
    return rubric, PromptSet(rubric.language, job.prompts_dir), ServiceChecker.load(job.lexicon_path)


def should_redact(job: GradeJob, endpoint: ResolvedEndpoint) -> bool:
    """The job's choice, else on for every endpoint that is not this machine (the default URL is OpenAI's)."""
    if job.redact is not None:
        return job.redact
    return not (endpoint.local or is_loopback(endpoint.endpoint.base_url or ""))


CHECK_PROCESS_MIN_TRANSCRIPTS = 200
"""Below this many input lines, starting a child for the checks costs more than it saves."""
CHECK_PROCESS_MIN_BYTES = 512 * 1024
"""The same for inputs whose chats were not counted (CSV, chat logs): about 200 chats of 2–3 kB."""


def use_check_process(expected_transcripts: int | None, *, input_bytes: int, cpus: int, local: bool) -> bool:
    """Whether the service checks go to a child process (pipeline/checks/process.py): for a large run
    with a core to spare, and never next to the embedded model, which wants every core."""
    if expected_transcripts is not None:
        large = expected_transcripts >= CHECK_PROCESS_MIN_TRANSCRIPTS
    else:
        large = input_bytes >= CHECK_PROCESS_MIN_BYTES
    return cpus >= 2 and large and not local


def local_sampling(settings: Settings, endpoint: ResolvedEndpoint) -> Sampling:
    """The settings' sampling, with the cap and seed the local server was started for where those are unset."""
    update: dict[str, int] = {}
    if endpoint.max_tokens is not None:
        update["max_tokens"] = endpoint.max_tokens
    if endpoint.seed is not None and settings.seed is None:
        update["seed"] = endpoint.seed
    return settings.sampling.model_copy(update=update)


def use_compact(job: GradeJob, *, local: bool) -> bool:
    """The job's choice, else on for the embedded local model, which writes a few tokens a second on a CPU."""
    return job.compact if job.compact is not None else local


async def run_job(job: GradeJob, settings: Settings, *, progress: ProgressSink | None = None,
                  expected_transcripts: int | None = None,
                  on_endpoint: Callable[[ResolvedEndpoint], None] | None = None) -> JobResult:
    """Grade `job.inputs` with `settings`; resumable; writes the contract files into `job.out_dir`."""
    from pipeline.llm.local import model as local_model  # here: its imports serve only this one question

    rubric, prompts, checker = _load(job)
    job.out_dir.mkdir(parents=True, exist_ok=True)
    memo = LineMemo({"shop_speakers": sorted(job.shop_speakers), "bot_speakers": sorted(job.bot_speakers),
                     "shop_prefixes": list(job.shop_prefixes)})
    items = select(read_unfinished_inputs(job, memo), job.only_ids, job.limit)
    with contextlib.ExitStack() as stack:
        endpoint = stack.enter_context(resolve_endpoint(settings, rubric=rubric, prompts=prompts, job_inputs=job))
        if on_endpoint is not None:
            on_endpoint(endpoint)
        options = RunOptions(
            concurrency=endpoint.max_concurrency or settings.concurrency, repeats=job.repeats,
            per_criterion=job.per_criterion, retry_failed=job.retry_failed,
            include_pending_batch=job.include_pending_batch, rpm=settings.rpm,
            tpm=settings.tpm, context_window=endpoint.context_window or settings.context_window,
        )
        # Limits learned by earlier runs against this endpoint, unless --rpm/--tpm set the pace (learned_limits)
        learn = not endpoint.local and settings.rpm is None and settings.tpm is None
        start = load_learned_limits(endpoint.endpoint.base_url, endpoint.model) if learn else None
        pacer = Pacer(options.concurrency, start=start)
        client = LLMClient(endpoint.endpoint, pacer=pacer)
        compact = use_compact(job, local=endpoint.local)
        sampling = local_sampling(settings, endpoint)
        try:
            grader = Grader(
                rubric, prompts, client, model=endpoint.model, sampling=sampling,
                response_mode=settings.response_format, retry=RetryPolicy(attempts=settings.retry_attempts),
                compact=compact,
            )
            redact = should_redact(job, endpoint)
            with Store.open(job.out_dir) as store:
                record = settings.public() | {"model": endpoint.model, "rubric_path": str(job.rubric_path),
                                              "rubric": rubric.model_dump(mode="json", by_alias=True),
                                              "redact": redact, "lexicon_path": str(job.lexicon_path),
                                              "compact": compact, "max_tokens": sampling.max_tokens,
                                              "local": endpoint.local,
                                              "checked_by": str(job.checked_by) if job.checked_by else None}
                try:
                    summary = await run_grading(
                        items, grader=grader, store=store, options=options,
                        rejects_path=job.out_dir / "rejects.jsonl", progress=progress,
                        expected_transcripts=expected_transcripts, settings_record=record,
                        redaction=RedactionConfig() if redact else None, checker=checker, memo=memo,
                        check_process=use_check_process(
                            expected_transcripts, input_bytes=input_size(job.inputs),
                            cpus=local_model.usable_cpus(), local=endpoint.local),
                        # Only when on, so the keys of grades made without compact mode stay as they were.
                        key_options={"compact": True} if compact else None,
                    )
                finally:  # also on Ctrl-C: the files show every grade finished so far
                    outputs = refresh_outputs(store, rubric, job.out_dir)
        finally:
            await client.close()
            if learn:
                save_learned_limits(endpoint.endpoint.base_url, endpoint.model, pacer.learned())
    return JobResult(summary, outputs.scores_csv, outputs.grades_jsonl, outputs.checks_jsonl,
                     job.out_dir / "rejects.jsonl", outputs.dimension_means, outputs.needs_review, endpoint.model,
                     endpoint, outputs.judge)
