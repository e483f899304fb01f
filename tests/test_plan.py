"""Tests for pipeline/grading/plan.py: one plan of a transcript's grades, for online grading and batch files."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.batch.files import write_batch_files
from pipeline.grading.grader import Grader, grade_scopes
from pipeline.grading.plan import GradePlanner
from pipeline.grading.prompting import PromptSet, transcript_hash
from pipeline.grading.redaction import RedactionConfig
from pipeline.grading.runner import RunOptions, RunSummary, run_grading
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.rows import grade_key
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parent.parent
PHONE = "13812345678"


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")


def chat(transcript_id: str = "a") -> Transcript:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return Transcript(id=transcript_id, shop="小店", turns=[
        Turn(role=Role.customer, text=f"什么时候发货？我的电话{PHONE}", time=t0),
        Turn(role=Role.agent, text="亲，您好，今天下单今天发货哦", time=t0),
    ])


@given(repeats=st.integers(1, 3), per_criterion=st.booleans(), redact=st.booleans(),
       options=st.sampled_from([None, {}, {"lang": "zh"}]))
@settings(deadline=None, max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_plan_holds_the_resume_key_of_every_repeat_and_scope(
    rubric: Rubric, repeats: int, per_criterion: bool, redact: bool, options: dict[str, object] | None
) -> None:
    prompts, sampling = PromptSet("zh"), Sampling(seed=7)
    scopes = grade_scopes(rubric, per_criterion)
    planner = GradePlanner(rubric_hash=rubric.content_hash, template_hash=prompts.template_hash, model="m",
                           sampling=sampling, scopes=scopes, repeats=repeats, key_options=options,
                           redaction=RedactionConfig() if redact else None)
    plan = planner.plan(chat())

    sent_text = plan.transcript.model_dump_json()
    assert (PHONE not in sent_text) is redact and (plan.redacted is not None) is redact
    assert plan.content_hash == transcript_hash(plan.transcript)
    key_options = {**(options or {}), "redact": True} if redact else options
    assert planner.key_options == key_options
    expected = [(r, s, grade_key(transcript_hash=plan.content_hash, rubric_hash=rubric.content_hash,
                                 template_hash=prompts.template_hash, model="m", sampling=sampling, repeat=r,
                                 scope=s, options=key_options))
                for r in range(repeats) for s, _ in scopes]
    assert [(g.repeat, g.scope, g.key) for g in plan.grades] == expected
    assert [g.criteria for g in plan.grades] == [c for _ in range(repeats) for _, c in scopes]


async def _no_sleep(_: float) -> None:
    pass


def grade_online(server: MockServer, rubric: Rubric, out: Path, options: RunOptions,
                 redaction: RedactionConfig | None) -> RunSummary:
    async def go() -> RunSummary:
        client = LLMClient(Endpoint(server.base_url, "k"))
        grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(),
                        retry=RetryPolicy(attempts=1), sleep=_no_sleep)
        try:
            with Store.open(out) as store:
                return await run_grading([chat()], grader=grader, store=store, options=options,
                                         rejects_path=out / "rejects.jsonl", redaction=redaction)
        finally:
            await client.close()

    return asyncio.run(go())


@pytest.mark.parametrize("redact", [False, True])
def test_online_grading_finds_every_request_of_a_batch_file_under_its_key(
    mock_server: MockServer, rubric: Rubric, tmp_path: Path, redact: bool
) -> None:
    redaction = RedactionConfig() if redact else None
    with Store.open(tmp_path) as store:
        written = write_batch_files([chat()], rubric=rubric, prompts=PromptSet("zh"), model="mock-model",
                                    sampling=Sampling(), store=store, out_dir=tmp_path, per_criterion=True,
                                    repeats=2, redaction=redaction)
    scopes = [scope for scope, _ in grade_scopes(rubric, True)]
    [path] = written.files
    requests = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    with Store.open(tmp_path) as store:
        stored = [store.batch_request(r["custom_id"]) for r in requests]
    # A scope's repeats are written one after the other, its prompt rendered once.
    assert [(s["scope"], s["repeat"]) for s in stored if s] == [(s, r) for s in scopes for r in range(2)]

    summary = grade_online(mock_server, rubric, tmp_path, RunOptions(repeats=2, per_criterion=True), redaction)

    assert summary.pending_batch == written.requests == 2 * len(scopes)
    assert summary.graded == summary.unscored == 0
    assert not [r for r in mock_server.requests if r.path.endswith("/chat/completions")]
