"""One status → error mapping for chat calls and the Batch API, and hints that name real options."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pytest
import typer

from pipeline.batch.files import write_batch_files
from pipeline.batch.provider import batch_client, submit
from pipeline.checks.checker import ServiceChecker
from pipeline.cli.main import app
from pipeline.errors import FatalLLMError, TransientLLMError
from pipeline.grading.prompting import PromptSet
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.status_errors import error_for_status, status_hint
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.rubric.load import load_rubric
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_timeouts_conflicts_rate_limits_and_server_errors_are_retried(status: int) -> None:
    error = error_for_status(status, f"HTTP {status}: busy", retry_after=2.0)
    assert isinstance(error, TransientLLMError) and error.status == status and error.retry_after == 2.0
    assert "run the same command again" in str(error_for_status(status, "m", batch=True))


@pytest.mark.parametrize("status", [400, 401, 403, 404, 418, 422])
def test_other_statuses_stop_with_a_hint(status: int) -> None:
    error = error_for_status(status, f"HTTP {status}: no")
    assert isinstance(error, FatalLLMError) and error.hint and str(error) == f"HTTP {status}: no"


def test_the_401_hint_names_the_variable_that_was_read() -> None:
    assert "DEEPSEEK_API_KEY" in status_hint(401, key_env="DEEPSEEK_API_KEY")
    assert "OPENAI_API_KEY" in status_hint(401)


def kefu_options() -> set[str]:
    """Every option of every `kefu` command."""
    names: set[str] = set()
    stack: list[Any] = [typer.main.get_command(app)]  # typer's own click: its classes are not click's
    while stack:
        command = stack.pop()
        if hasattr(command, "list_commands"):
            ctx = click.Context(command)
            stack.extend(c for name in command.list_commands(ctx) if (c := command.get_command(ctx, name)))
        names.update(o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
    return names


def test_every_hint_names_only_options_kefu_has() -> None:
    options = kefu_options()
    assert "--api-key-env" in options and "--base-url" in options
    for status in range(400, 600):
        for batch in (False, True):
            named = set(re.findall(r"--[a-z][a-z-]*", status_hint(status, batch=batch)))
            assert named <= options, (status, named - options)  # e.g. no "--api-key"


def test_chat_calls_and_batch_calls_give_the_same_advice(tmp_path: Path) -> None:
    rubric = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")
    with MockServer(api_key="the-right-key") as server:
        client = LLMClient(Endpoint(server.base_url, "a-wrong-key", key_env="KEFU_TEST_KEY"))

        async def call() -> None:
            try:
                await client.chat([{"role": "user", "content": "hi"}], model="mock-model",
                                  response_format={"type": "json_object"}, temperature=0, seed=None, max_tokens=10)
            finally:
                await client.close()

        with pytest.raises(FatalLLMError) as refused:
            asyncio.run(call())
        assert refused.value.status == 401 and refused.value.hint == status_hint(401, key_env="KEFU_TEST_KEY")

        t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
        chat = Transcript(id="c1", turns=[Turn(role=Role.customer, text="在吗", time=t0),
                                          Turn(role=Role.agent, text="亲，您好", time=t0)])
        with Store.open(tmp_path) as store:
            write_batch_files([chat], rubric=rubric, prompts=PromptSet("zh"), model="mock-model", sampling=Sampling(),
                              store=store, out_dir=tmp_path, checker=ServiceChecker.load())
        no_batch_api = batch_client(Endpoint(server.base_url + "/no-batch-api", "the-right-key"))
        with pytest.raises(FatalLLMError) as missing:
            submit(tmp_path, no_batch_api)
        assert missing.value.status == 404 and missing.value.hint == status_hint(404, batch=True)
