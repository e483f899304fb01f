"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from pipeline.grader import Grader, Sampling
from pipeline.llm import Endpoint, LLMClient
from pipeline.mockserver import MockServer
from pipeline.pacing import Pacer
from pipeline.prompting import PromptSet
from pipeline.retry import RetryPolicy
from pipeline.rubric import load_rubric
from pipeline.runner import RunOptions, RunSummary, run_grading
from pipeline.store import Store
from pipeline.transcripts import Transcript


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 with default settings; change its attributes freely."""
    with MockServer() as server:
        yield server


@pytest.fixture(autouse=True)
def learned_limits_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rate limits learned by a test run (pipeline.learned_limits) go to a file of the test's own, never the
    user's cache (the CLI helpers pass KEFU_LIMITS_FILE on to the commands they start)."""
    path = tmp_path_factory.mktemp("limits") / "rate_limits.json"
    monkeypatch.setenv("KEFU_LIMITS_FILE", str(path))
    return path


GradeChats = Callable[..., Awaitable[RunSummary]]
"""`grade_chats(base_url, pacer, out, transcripts, concurrency=16, retry=None)`: see the fixture."""


@pytest.fixture
def grade_chats() -> GradeChats:
    """Grade transcripts with the e-commerce rubric against a loopback server through `run_grading`, with the
    `Pacer` given (None: unpaced) and `concurrency` workers; the summary."""
    rubric = load_rubric(Path(__file__).resolve().parent.parent / "rubric" / "ecommerce_cs.yaml")

    async def grade(base_url: str, pacer: Pacer | None, out: Path, transcripts: list[Transcript], *,
                    concurrency: int = 16, retry: RetryPolicy | None = None) -> RunSummary:
        client = LLMClient(Endpoint(base_url, "k"), pacer=pacer)
        grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(),
                        retry=retry or RetryPolicy())
        try:
            with Store.open(out) as store:
                return await run_grading(transcripts, grader=grader, store=store,
                                         options=RunOptions(concurrency=concurrency), rejects_path=out / "r.jsonl")
        finally:
            await client.close()

    return grade
