"""One transcript → one graded call: render, call with retries, validate, re-ask once, verify quotes.

Every grade also carries the chat's grader-addressed text (`pipeline.checks.injection`); a quote from such a
turn is never verified, so a model that obeyed the text cannot cite it as evidence.

A grade that still fails after the retries and the re-ask is returned as *unscored* with its
reason and attempts, never as 0. In per-criterion mode the runner calls `grade` once per
criterion; the stored shape is the same.
"""

from __future__ import annotations

import logging
import time
import unicodedata
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from pipeline.checks.injection import find_injection
from pipeline.errors import (
    EndpointDownError,
    FatalLLMError,
    GradeValidationError,
    LLMError,
    SchemaUnsupportedError,
    TransientLLMError,
    UnusableReplyError,
)
from pipeline.grading.prompting import PromptSet
from pipeline.grading.schema import GradeSchema, build_grade_schema
from pipeline.llm.client import ChatResult, LLMClient
from pipeline.llm.retry import RetryOutcome, RetryPolicy, Sleep, call_with_retries
from pipeline.models.grade import (
    CRITERION_GRADES,
    CriterionGrade,
    Grade,
    InjectionHit,
    ResponseMode,
    Sampling,
    VerifyFailure,
)
from pipeline.models.transcript import Transcript
from pipeline.rubric.model import Criterion, Rubric, Speaker

log = logging.getLogger("kefu.grader")

FAILING_WINDOW = 100
"""A run stops when, of its latest this-many grades, ..."""
FAILING_SHARE = 0.5
"""... at least this share ran out of retries on transient errors (see `Grader.grade`)."""

_JSON_OBJECT: dict[str, Any] = {"type": "json_object"}


def grade_scopes(rubric: Rubric, per_criterion: bool) -> list[tuple[str, list[Criterion]]]:
    """The calls one transcript needs: one for all criteria (scope 'all'), or one per criterion (its id)."""
    criteria = rubric.criteria()
    if per_criterion:
        return [(c.id, [c]) for c in criteria]
    return [("all", criteria)]


def response_format_for(schema: GradeSchema, mode: Literal["json_schema", "json_object"]) -> dict[str, Any]:
    """The `response_format` a call sends in this mode: one shared dict per schema, so encoders can cache it."""
    return schema.response_format if mode == "json_schema" else _JSON_OBJECT


def grade_from_reply(
    transcript: Transcript,
    *,
    key: str,
    repeat: int,
    scope: str,
    criteria: Sequence[Criterion],
    model: str,
    response_mode: str,
    result: ChatResult | None,
    failure: str | None,
    attempts: int,
) -> Grade:
    """The Grade of a request that ran outside `Grader.grade`, such as one line of a batch's output.

    The reply is validated against the same schema and its quotes are checked the same way. There is
    no re-ask (the request ran once, offline), so an invalid reply is unscored with the validation
    error, and `kefu grade --retry-failed` can regrade it online under the same key. `failure`, the
    provider's reason a request failed or never ran, makes the grade unscored as well.
    """
    parsed: BaseModel | None = None
    error = failure
    raw = result.content if result is not None else None
    if result is not None and failure is None:
        try:
            parsed = _validate_result(build_grade_schema(criteria), result)
        except UnusableReplyError as exc:
            error, raw = str(exc), exc.raw
        except GradeValidationError as exc:
            error = f"the model's reply did not match the schema (batch request: no re-ask): {exc}"
    elif result is None and failure is None:
        error = "no reply"
    return _finished_grade(
        transcript, parsed, criteria, raw=raw, key=key, repeat=repeat, scope=scope, model=model, attempts=attempts,
        prompt_tokens=result.prompt_tokens if result else 0, cached_tokens=result.cached_tokens if result else None,
        completion_tokens=result.completion_tokens if result else 0, error=error, response_mode=response_mode,
        latency_s=0.0,  # a batch request's own duration is not reported by the provider
    )


class Grader:
    """Grades transcripts against one rubric through one endpoint; shared by every task of a run."""

    def __init__(
        self,
        rubric: Rubric,
        prompts: PromptSet,
        client: LLMClient,
        *,
        model: str,
        sampling: Sampling,
        response_mode: ResponseMode = "auto",
        retry: RetryPolicy | None = None,
        sleep: Sleep | None = None,
        compact: bool = False,
    ) -> None:
        self.rubric = rubric
        self.prompts = prompts
        self.client = client
        self.model = model
        self.sampling = sampling
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        # Compact mode (small local models): limits in the schema and the prompt; see pipeline.grading.schema.
        self.compact = compact
        # "auto" starts with json_schema and switches for the whole run on the endpoint's first refusal.
        self.mode: Literal["json_schema", "json_object"] = (
            "json_object" if response_mode == "json_object" else "json_schema"
        )
        self._auto = response_mode == "auto"
        self._gave_up: deque[bool] = deque(maxlen=FAILING_WINDOW)  # per latest grade: ran out of retries?

    def scopes(self, per_criterion: bool) -> list[tuple[str, list[Criterion]]]:
        """The calls one transcript needs: one for all criteria, or one per criterion."""
        return grade_scopes(self.rubric, per_criterion)

    async def grade(self, transcript: Transcript, *, key: str, repeat: int, scope: str,
                    criteria: Sequence[Criterion]) -> Grade:
        """Grade one transcript on `criteria`; never raises for a model failure except FatalLLMError, and
        EndpointDownError when no request has succeeded since this grade started (see pipeline.errors) or
        when half of the run's latest 100 grades ran out of retries: an endpoint that fails nine requests in
        ten would otherwise leave most of a backlog unscored, ~30 s of retries a chat."""
        self.client.open()  # an endpoint served on demand starts here, outside this grade's latency
        started = time.monotonic()
        schema = build_grade_schema(criteria, compact=self.compact)
        messages = self.prompts.messages(self.rubric, criteria, transcript, compact=self.compact)
        outcome = RetryOutcome()
        usage = _Usage()
        reply: str | None = None
        error: str | None = None
        parsed: BaseModel | None = None
        gave_up: TransientLLMError | None = None  # the error this grade ran out of retries on
        try:
            result = await self._call(messages, schema, outcome, usage, transcript.id)
            reply = result.content
            try:
                parsed = _validate_result(schema, result)
            except UnusableReplyError:
                raise  # asking again would not mend it
            except GradeValidationError as first:
                log.warning("transcript %s: invalid reply, asking again: %s", transcript.id, first)
                reask = [
                    *messages,
                    {"role": "assistant", "content": reply},
                    {"role": "user", "content": self.prompts.reask(str(first), schema.criterion_ids)},
                ]
                second = RetryOutcome()
                result = await self._call(reask, schema, second, usage, transcript.id)
                outcome.attempts += second.attempts
                reply = result.content
                parsed = _validate_result(schema, result)
        except UnusableReplyError as exc:
            error, reply = str(exc), exc.raw
        except GradeValidationError as exc:
            error = f"the model's reply did not match the schema after one re-ask: {exc}"
        except FatalLLMError:
            raise
        except LLMError as exc:
            if isinstance(exc, TransientLLMError) and not self.client.succeeded_since(started):
                failing = time.monotonic() - started
                raise EndpointDownError(
                    f"no request to {self.client.base_url} has succeeded for {failing:.0f} s (the last: {exc}). "
                    "Check the server, --base-url and the account's quota (or raise --timeout for a slow model); "
                    "every finished grade is saved, and the same command resumes", status=exc.status,
                ) from None
            error = f"gave up after {outcome.attempts} attempts: {exc}"
            gave_up = exc if isinstance(exc, TransientLLMError) else None
        self._count_gave_up(gave_up)
        return _finished_grade(
            transcript, parsed, criteria, raw=reply, key=key, repeat=repeat, scope=scope, model=self.model,
            attempts=outcome.attempts, prompt_tokens=usage.prompt, cached_tokens=usage.cached,
            completion_tokens=usage.completion, error=error, response_mode=self.mode,
            latency_s=round(time.monotonic() - started, 4),
        )

    def _count_gave_up(self, gave_up: TransientLLMError | None) -> None:
        self._gave_up.append(gave_up is not None)
        if gave_up is None or len(self._gave_up) < FAILING_WINDOW:
            return  # the count is only needed when a grade has just given up
        if (failed := sum(self._gave_up)) >= FAILING_SHARE * FAILING_WINDOW:
            raise EndpointDownError(
                f"{failed} of the last {FAILING_WINDOW} grades ran out of retries on {self.client.base_url} "
                f"(the last: {gave_up}). The endpoint is failing most requests: check its logs and load, or lower "
                "--concurrency; every finished grade is saved, and the same command resumes",
                status=gave_up.status,
            )

    async def _call(self, messages: list[dict[str, str]], schema: GradeSchema, outcome: RetryOutcome,
                    usage: _Usage, label: str) -> ChatResult:
        async def once() -> ChatResult:
            fmt = response_format_for(schema, self.mode)
            try:
                return await self.client.chat(
                    messages,
                    model=self.model,
                    response_format=fmt,
                    temperature=self.sampling.temperature,
                    seed=self.sampling.seed,
                    max_tokens=self.sampling.max_tokens,
                )
            except SchemaUnsupportedError:
                if not self._auto:
                    raise
                log.warning("the endpoint refused json_schema; falling back to json_object for this run")
                self.mode = "json_object"
                return await once()

        kwargs: dict[str, Any] = {"label": label, "served_since": self.client.succeeded_since,
                                  "paced": self.client.pacer is not None}
        if self._sleep is not None:
            kwargs["sleep"] = self._sleep
        result = await call_with_retries(once, self.retry, outcome, **kwargs)
        usage.add(result)
        return result


class _Usage:
    """Token counts summed over every call a grade made."""

    def __init__(self) -> None:
        self.prompt = 0
        self.completion = 0
        self.cached: int | None = None

    def add(self, result: ChatResult) -> None:
        self.prompt += result.prompt_tokens
        self.completion += result.completion_tokens
        if result.cached_tokens is not None:
            self.cached = (self.cached or 0) + result.cached_tokens


def _validate(schema: GradeSchema, reply: str) -> BaseModel:
    try:
        return schema.model.model_validate_json(_strip_fences(reply))
    except ValidationError as exc:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in exc.errors()[:8]
        )
        raise GradeValidationError(details, raw=reply) from None


def _validate_result(schema: GradeSchema, result: ChatResult) -> BaseModel:
    """`_validate` of a reply, saying so when it is a refusal or was cut off rather than calling it invalid JSON."""
    if result.refusal:
        raise UnusableReplyError(f"the model refused to grade: {result.refusal}", raw=result.refusal)
    try:
        return _validate(schema, result.content)
    except GradeValidationError:
        if result.finish_reason != "length":
            raise
        raise UnusableReplyError(
            f"the reply was cut off at max_tokens ({result.completion_tokens} completion tokens) before its JSON "
            "was complete; raise --max-tokens", raw=result.content) from None


def _strip_fences(reply: str) -> str:
    """json_object-mode models sometimes wrap JSON in a ``` fence; the schema check decides the rest."""
    text = reply.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    return text


def _normalise(text: str) -> str:
    return "".join(unicodedata.normalize("NFKC", text).split())


def verify_quote(transcript: Transcript, turn: int, quote: str) -> bool:
    """True if `quote` occurs in turn `turn` (1-based), ignoring whitespace and full/half width."""
    if not 1 <= turn <= len(transcript.turns) or not quote.strip():
        return False
    return _normalise(quote) in _normalise(transcript.turns[turn - 1].text)


def quote_failure(transcript: Transcript, turn: int, quote: str, judges: Speaker) -> VerifyFailure | None:
    """Why a quote cited for a criterion judging `judges` does not hold up, or None when it does: the greeting
    criterion cannot rest on the customer's own words."""
    if not verify_quote(transcript, turn, quote):
        return "not_in_turn"
    if judges != "any" and transcript.turns[turn - 1].role.value != judges:
        return "wrong_speaker"
    return None


def _finished_grade(transcript: Transcript, parsed: BaseModel | None, criteria: Sequence[Criterion], *,
                    raw: str | None, **call: Any) -> Grade:
    """The Grade of one call, online or batch: scored if its reply validated, each quote checked the same way."""
    injection = find_injection(transcript)
    return Grade(
        transcript_id=transcript.id, status="scored" if parsed is not None else "unscored",
        criteria=_criterion_grades(parsed, criteria, transcript, injection), raw=raw if parsed is None else None,
        created_at=datetime.now(UTC), injection=injection, **call,
    )


def _criterion_grades(parsed: BaseModel | None, criteria: Sequence[Criterion], transcript: Transcript,
                      injection: Sequence[InjectionHit]) -> list[CriterionGrade]:
    if parsed is None:
        return [CriterionGrade(criterion_id=c.id, score=None) for c in criteria]
    # A turn that addresses the grader is never evidence: the model quoting it is the symptom of obeying it.
    suspected = {hit.turn for hit in injection if hit.turn is not None}
    # Plain dicts validated in one call: a model built per criterion and per quote costs twice as much.
    grades = []
    for c in criteria:
        reply = getattr(parsed, c.id)
        failures = [quote_failure(transcript, e.turn, e.quote, c.judges) or
                    ("injection_suspected" if e.turn in suspected else None) for e in reply.evidence]
        evidence = [{"turn": e.turn, "quote": e.quote, "verified": failed is None, "verify_failed": failed}
                    for e, failed in zip(reply.evidence, failures, strict=True)]
        grades.append({"criterion_id": c.id, "score": reply.score, "reasoning": reply.reasoning, "evidence": evidence})
    return CRITERION_GRADES.validate_python(grades)
