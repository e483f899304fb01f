"""The grading run: streams transcripts through bounded concurrency, rate limits, resume and the store.

Concurrency lives here and only here: one shared client, a fixed pool of worker tasks, a bounded
queue between the reader and the workers (so input is never read far ahead), optional
requests-per-minute and tokens-per-minute limits, and every finished grade committed at once.

At ingest, once per transcript (not per repeat or call), the reader task redacts the copy that is
sent (when redaction is on) and runs the service checks on the ORIGINAL transcript, storing them
with its metadata. Both are CPU work, so they stay per transcript, and stored checks of the same
transcript by the same checker are reused: a resumed run checks nothing twice. With a
`CheckProcess` the checks are made in a child process while the requests are out, and a
transcript's grades wait for them before they are stored.
With a `LineMemo` (`pipeline.grading.resume`), JSON lines graded in full by an earlier run under the same
settings arrive as `Finished` and cost a digest, not a parse.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from pipeline.checks.checker import ServiceChecker
from pipeline.checks.process import CheckProcess
from pipeline.grading.grader import Grader
from pipeline.grading.plan import GradePlanner
from pipeline.grading.prompting import transcript_hash
from pipeline.grading.redaction import PiiKind, RedactionConfig
from pipeline.grading.resume import LineMemo
from pipeline.inputs.rejects import reject_line
from pipeline.inputs.tokens import estimate_tokens
from pipeline.models.grade import Grade, add_tokens
from pipeline.models.transcript import Finished, Reject, Transcript
from pipeline.rubric.model import Criterion
from pipeline.store.digests import KeySet
from pipeline.store.rows import FinishedLine, TranscriptMeta
from pipeline.store.store import Store

Clock = Callable[[], float]


class RunOptions(BaseModel):
    """How a run goes (not what it grades)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at most.")
    repeats: int = Field(default=1, ge=1, description="Independent grades per transcript.")
    per_criterion: bool = Field(default=False, description="One call per criterion instead of one per transcript.")
    retry_failed: bool = Field(default=False, description="Re-attempt grades stored as unscored.")
    include_pending_batch: bool = Field(
        default=False, description="Grade online what a batch not yet collected holds too (it is paid twice).")
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute at most.")
    tpm: float | None = Field(default=None, gt=0, description="Estimated tokens per minute at most.")
    context_window: int = Field(default=32768, gt=0, description="Model context in tokens (length check).")


class ProgressSink(Protocol):
    """What the runner tells a progress display; the CLI implements it with rich."""

    def start(self, total: int | None) -> None: ...

    def advance(self, grade: Grade) -> None: ...

    def skip(self, calls: int) -> None:
        """Calls that need no request: finished by an earlier run."""
        ...


class RunSummary(BaseModel):
    """What a run did, for the closing summary and the runs table."""

    model_config = ConfigDict(extra="forbid")

    transcripts: int = 0
    graded: int = 0
    unscored: int = 0
    skipped: int = 0
    pending_batch: int = Field(default=0, description="Calls skipped because a batch not yet collected holds them.")
    rejected: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    elapsed_s: float = 0.0
    interrupted: bool = False
    redacted: bool = Field(default=False, description="Whether transcripts were redacted before sending.")
    slow_down: int = Field(default=0, description="429 and 503 answers: the endpoint asked to slow down.")
    lowest_in_flight: int | None = Field(
        default=None,
        description="The fewest requests in flight the run went down to after them (None: never lowered).",
    )
    paced_rpm: float | None = Field(
        default=None, description="Requests a minute the endpoint's limit was paced at (None: not known).")
    paced_tpm: float | None = Field(
        default=None, description="Tokens a minute the endpoint's limit was paced at (None: not known).")
    redactions: dict[str, int] = Field(
        default_factory=dict,
        description="Personal data replaced per kind (PiiKind value), over the transcripts sent in this run.",
    )


class RateLimiter:
    """Spaces requests so that no minute sees more than `rpm` requests or `tpm` tokens.

    A virtual-clock limiter (GCRA): each acquire reserves the next slot, so waiting callers are
    served in order and bursts never exceed the limit.
    """

    def __init__(self, rpm: float | None, tpm: float | None, *, clock: Clock = time.monotonic) -> None:
        self._rpm = rpm
        self._tpm = tpm
        self._clock = clock
        self._next = 0.0

    async def acquire(self, tokens: int) -> None:
        """Wait for this request's slot."""
        if self._rpm is None and self._tpm is None:
            return
        cost = 0.0
        if self._rpm is not None:
            cost = max(cost, 60.0 / self._rpm)
        if self._tpm is not None:
            cost = max(cost, 60.0 * tokens / self._tpm)
        now = self._clock()
        start = max(now, self._next)
        self._next = start + cost
        if start > now:
            await asyncio.sleep(start - now)


@dataclass
class _Outstanding:
    """A transcript's calls still in flight.

    The first grade to be stored carries the transcript's metadata and checks, and the last one the
    finished line, each in the grade's own transaction: one commit per call instead of two.
    """

    meta: TranscriptMeta | None
    line: FinishedLine | None
    calls: int
    checks: asyncio.Future[str] | None = None
    """The checks record still being made by the check process; the metadata is stored with it."""
    original_hash: str = ""
    """The original (unredacted) transcript's hash, which its checks record carries."""

    async def ready(self, child: CheckProcess) -> None:
        """Wait for the checks if they are still being made. If the wait is cancelled (Ctrl-C), make
        them here and now before re-raising, so that the grade already paid for can still be stored."""
        if self.checks is None:
            return
        try:
            record = await asyncio.shield(self.checks)
        except asyncio.CancelledError:
            if self.checks is not None and self.meta is not None:
                self._settle(child.in_process(self.meta.transcript, self.original_hash))
            raise
        self._settle(record)

    def _settle(self, record: str) -> None:
        if self.meta is not None:
            self.meta = self.meta._replace(checks=record)
        self.checks = None

    def done(self) -> tuple[TranscriptMeta | None, FinishedLine | None]:
        """What the grade being stored must carry: the metadata once, the line with the last call."""
        meta, self.meta = self.meta, None
        self.calls -= 1
        return meta, self.line if self.calls == 0 else None


@dataclass
class _Unit:
    transcript: Transcript
    repeat: int
    scope: str
    criteria: list[Criterion]
    key: str
    tokens: int
    outstanding: _Outstanding


@dataclass
class _State:
    summary: RunSummary
    done: KeySet
    pending: KeySet | None
    """Keys in a batch not yet collected: skipped unless asked for (None: there are none, or asked for)."""
    started: float = field(default_factory=time.monotonic)


async def run_grading(
    items: Iterable[Transcript | Reject | Finished],
    *,
    grader: Grader,
    store: Store,
    options: RunOptions,
    rejects_path: Path,
    key_options: dict[str, object] | None = None,
    redaction: RedactionConfig | None = None,
    checker: ServiceChecker | None = None,
    progress: ProgressSink | None = None,
    expected_transcripts: int | None = None,
    settings_record: dict[str, object] | None = None,
    memo: LineMemo | None = None,
    check_process: bool = False,
) -> RunSummary:
    """Grade every transcript in `items`; rejects go to `rejects_path`; returns the run's summary.

    With `redaction`, each transcript's personal data is replaced before it is rendered, the
    grader sees (and verifies quotes against) that text, and `{"redact": true}` joins the resume
    key's `key_options`. With `checker`, its checks of the original transcript are stored with
    the transcript's metadata. With `memo` (the one `items` was read with), finished lines are
    skipped unparsed and newly finished ones recorded; `--retry-failed` records but skips none.
    With `check_process`, the checks are made in a child process (`pipeline.checks.process`).
    """
    rubric = grader.rubric
    rubric_hash = rubric.content_hash  # a dump and sha256 of the whole rubric: once per run, not per grade
    run_id = store.start_run(
        rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric_hash,
        template_hash=grader.prompts.template_hash, model=grader.model, settings=dict(settings_record or {}),
    )
    state = _State(RunSummary(redacted=redaction is not None),
                   store.finished_keys(include_unscored=not options.retry_failed),
                   None if options.include_pending_batch else store.pending_batch_keys())
    scopes = grader.scopes(options.per_criterion)
    planner = GradePlanner(rubric_hash=rubric_hash, template_hash=grader.prompts.template_hash, model=grader.model,
                           sampling=grader.sampling, scopes=scopes, repeats=options.repeats,
                           key_options=key_options, redaction=redaction)
    calls_per_transcript = options.repeats * len(scopes)
    if memo is not None:
        memo.open(store, {
            "rubric": rubric_hash, "templates": grader.prompts.template_hash, "model": grader.model,
            "sampling": grader.sampling.model_dump(mode="json"), "repeats": options.repeats,
            "scopes": [scope for scope, _ in scopes], "options": planner.key_options or {},
            "checker": checker.fingerprint if checker is not None else None,
        }, skip=not options.retry_failed)
    system_tokens = {scope: estimate_tokens(grader.prompts.system(rubric, crits)) for scope, crits in scopes}
    limiter = RateLimiter(options.rpm, options.tpm)
    queue: asyncio.Queue[_Unit | None] = asyncio.Queue(maxsize=2 * options.concurrency)
    if progress is not None:
        progress.start(expected_transcripts * calls_per_transcript if expected_transcripts is not None else None)

    async def produce() -> None:
        with rejects_path.open("w", encoding="utf-8") as rejects:
            for item in items:
                if isinstance(item, Reject):
                    _write_reject(rejects, item, state)
                    continue
                state.summary.transcripts += 1
                if isinstance(item, Finished):
                    state.summary.skipped += calls_per_transcript
                    if progress is not None:
                        progress.skip(calls_per_transcript)
                    continue
                line = memo.line_of(item.source, item.id) if memo is not None else None
                plan = planner.plan(item)
                transcript, thash, redacted = plan.transcript, plan.content_hash, plan.redacted
                pending = []
                in_batch = state.summary.pending_batch
                for planned in plan.grades:
                    if planned.key in state.done:
                        state.summary.skipped += 1
                        if progress is not None:
                            progress.skip(1)
                    elif state.pending is not None and planned.key in state.pending:
                        state.summary.pending_batch += 1  # sent already; grading it here would pay twice
                        if progress is not None:
                            progress.skip(1)
                    else:
                        pending.append(planned)
                if state.summary.pending_batch != in_batch:
                    line = None  # not finished before its batch is collected
                checks = stored = None
                original_hash = ""
                offload = False  # made by the check process once the transcript is known to be sent
                if checker is not None:
                    original_hash = thash if transcript is item else transcript_hash(item)
                    stored = store.transcript_checks(item.id)
                    offload = child is not None and bool(pending) and not checker.is_current(stored, original_hash)
                    if not offload:
                        checks = checker.record_for(item, original_hash, stored)
                if not pending:  # graded on an earlier run: only new checks are worth a write
                    if checks != stored:
                        store.save_transcript(item, thash, checks)
                    if line is not None:
                        store.save_finished_line(line)
                    continue
                user_tokens = estimate_tokens(grader.prompts.user(transcript))
                needed = max(system_tokens.values()) + user_tokens + (grader.sampling.max_tokens or 0)
                if needed > options.context_window:
                    _write_reject(rejects, Reject(
                        file=(item.source or "").rsplit(":", 1)[0], line=_line_of(item.source),
                        transcript_id=item.id, field="turns",
                        reason=f"too long for the model: about {needed} tokens with the rubric and the reply "
                               f"budget, over the context window of {options.context_window} "
                               f"(set --context-window if the model takes more; nothing was truncated)",
                    ), state)
                    continue
                future = await child.submit(item, original_hash) if child is not None and offload else None
                outstanding = _Outstanding(TranscriptMeta(item, thash, checks), line, len(pending), future,
                                           original_hash)
                for p in pending:
                    await queue.put(_Unit(transcript, p.repeat, p.scope, p.criteria, p.key,
                                          system_tokens[p.scope] + user_tokens, outstanding))
                if redacted is not None:
                    _count_redactions(state.summary, redacted.counts)
                # A put into a queue with room does not yield: without this, the first 2 × concurrency chats
                # were read, checked and rendered (0.3 s) before the first request went out.
                await asyncio.sleep(0)
        if child is not None:
            child.end_input()
        for _ in range(options.concurrency):
            await queue.put(None)

    async def work() -> None:
        while (unit := await queue.get()) is not None:
            await limiter.acquire(unit.tokens + (grader.sampling.max_tokens or 0) // 4)
            grade = await grader.grade(unit.transcript, key=unit.key, repeat=unit.repeat, scope=unit.scope,
                                       criteria=unit.criteria)
            if child is not None:
                try:
                    await unit.outstanding.ready(child)
                except asyncio.CancelledError:
                    save(unit, grade)
                    raise
            save(unit, grade)

    def save(unit: _Unit, grade: Grade) -> None:
        meta, finished = unit.outstanding.done()
        store.save_grade(grade, run_id, rubric_hash, meta=meta, finished_line=finished)
        _count(state.summary, grade)
        if progress is not None:
            progress.advance(grade)

    child = CheckProcess(checker) if checker is not None and check_process else None
    tasks = [asyncio.create_task(produce())] + [asyncio.create_task(work()) for _ in range(options.concurrency)]
    try:
        await _gather_failing_fast(tasks)
    except asyncio.CancelledError:
        state.summary.interrupted = True
        raise
    finally:
        state.summary.elapsed_s = round(time.monotonic() - state.started, 3)
        if (pacer := grader.client.pacer) is not None:
            learned = pacer.learned()
            state.summary.paced_rpm = None if learned.requests is None else round(60 * learned.requests, 1)
            state.summary.paced_tpm = None if learned.tokens is None else round(60 * learned.tokens)
            if pacer.refusals:
                state.summary.slow_down = pacer.refusals
                state.summary.lowest_in_flight = pacer.lowest
        store.finish_run(run_id, state.summary.model_dump())
        if child is not None:
            await child.close()
    return state.summary


async def _gather_failing_fast(tasks: list[asyncio.Task[None]]) -> None:
    """Wait for all tasks; on the first failure (e.g. a 401) cancel the rest and raise it."""
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def _count(summary: RunSummary, grade: Grade) -> None:
    if grade.status == "scored":
        summary.graded += 1
    else:
        summary.unscored += 1
    add_tokens(summary, grade)


def _count_redactions(summary: RunSummary, counts: Mapping[PiiKind, int]) -> None:
    for kind, n in counts.items():
        if n:
            summary.redactions[kind.value] = summary.redactions.get(kind.value, 0) + n


def _write_reject(handle: object, reject: Reject, state: _State) -> None:
    state.summary.rejected += 1
    handle.write(reject_line(reject))  # type: ignore[attr-defined]
    handle.flush()  # type: ignore[attr-defined]


def _line_of(source: str | None) -> int | None:
    if source and ":" in source:
        tail = source.rsplit(":", 1)[1]
        if tail.isdigit():
            return int(tail)
    return None
