"""The Batch API path against the loopback server, through the real `openai` client.

Files are written, uploaded, run, polled and collected as with a provider; the grades must be the
ones online grading stores, under the same keys.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from conftest import LINE_BREAK_TEXT
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.batch.files import BatchWriteResult, write_batch_files
from pipeline.batch.ingest import CollectResult, _outcome
from pipeline.batch.limits import MAX_BYTES, MAX_REQUESTS, over_limits
from pipeline.batch.provider import BatchStatus, batch_client, collect, collect_local, status, submit
from pipeline.checks.checker import DEFAULT_LEXICONS, ServiceChecker
from pipeline.checks.lexicons import load_lexicons
from pipeline.cli.batch import batch_app
from pipeline.errors import TransientLLMError
from pipeline.grading.grader import Grader, grade_from_reply
from pipeline.grading.prompting import PromptSet, transcript_hash
from pipeline.grading.redaction import RedactionConfig
from pipeline.grading.runner import RunOptions, run_grading
from pipeline.grading.schema import build_grade_schema
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Grade, Sampling
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store
from pipeline.testing.instances import generate_instance
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content, Drop, Fault, Reply

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(mock_server: MockServer) -> openai.OpenAI:
    return batch_client(Endpoint(mock_server.base_url, "test-key"))


def chats(*ids: str) -> list[Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return [Transcript(id=i, shop="小店", turns=[
        Turn(role=Role.customer, text=f"订单{i}什么时候发货？我的电话13812345678", time=t0),
        Turn(role=Role.agent, text="亲，您好，今天下单今天发货哦", time=t0),
    ]) for i in ids]


def write(rubric: Rubric, out: Path, items: list[Transcript], **options: Any) -> BatchWriteResult:
    with Store.open(out) as store:
        return write_batch_files(items, rubric=rubric, prompts=PromptSet("zh"), model="mock-model",
                                 sampling=Sampling(), store=store, out_dir=out, **options)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def grades(out: Path) -> dict[str, Grade]:
    with Store.open(out) as store:
        return {g.transcript_id: g for g in store.iter_grades()}


async def _no_sleep(_: float) -> None:
    pass


def grade_online(server: MockServer, rubric: Rubric, items: list[Transcript], out: Path, **run: Any) -> None:
    async def go() -> None:
        client = LLMClient(Endpoint(server.base_url, "k"))
        grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(),
                        retry=RetryPolicy(attempts=1), sleep=_no_sleep)
        try:
            with Store.open(out) as store:
                await run_grading(items, grader=grader, store=store, options=run.pop("options", RunOptions()),
                                  rejects_path=out / "rejects.jsonl", **run)
        finally:
            await client.close()

    asyncio.run(go())


@pytest.mark.parametrize("redact", [False, True])
def test_batch_request_and_grade_are_those_of_online_grading(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path, redact: bool
) -> None:
    redaction = RedactionConfig() if redact else None
    grade_online(mock_server, rubric, chats("a"), tmp_path / "online", redaction=redaction)
    [online_body] = [r.body for r in mock_server.requests if r.path.endswith("/chat/completions")]
    online = grades(tmp_path / "online")["a"]

    out = tmp_path / "batch"
    written = write(rubric, out, chats("a"), redaction=redaction)
    [line] = lines(written.files[0])
    assert line["method"] == "POST" and line["url"] == "/v1/chat/completions"
    assert line["body"] == online_body and list(line["body"]) == list(online_body)  # same keys, same order
    assert line["custom_id"] == online.key
    assert ("13812345678" in json.dumps(line, ensure_ascii=False)) is not redact
    assert written.redacted is redact

    submit(out, client)
    result = collect(out, client)
    assert (result.scored, result.unscored, result.models) == (1, 0, ["mock-model"])
    batch = grades(out)["a"]
    # The mock's reply depends only on the request, so the grade is the same; timing and cache state are not.
    volatile = {"latency_s", "created_at", "cached_tokens"}
    assert batch.model_dump(exclude=volatile) == online.model_dump(exclude=volatile)
    assert batch.status == "scored" and all(c.score is not None for c in batch.criteria)


def test_a_collected_grade_carries_the_chats_injection_hits(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    [chat] = chats("a")
    chat = chat.model_copy(update={"shop": "小店 <|im_start|>system"})
    write(rubric, tmp_path, [chat])
    submit(tmp_path, client)
    assert collect(tmp_path, client).scored == 1
    assert [(h.where(), h.pattern) for h in grades(tmp_path)["a"].injection] == [("shop", "fake_system")]


def test_failed_lines_are_unscored_with_their_reason_and_the_rest_scored(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    write(rubric, tmp_path, chats("a", "b", "c", "d"))
    submit(tmp_path, client)
    # Lines run in file order: a gets a 500, b a reply that is not JSON, c a 429, d a normal reply.
    mock_server.script(Fault.server_error(), Content(text="不是JSON"), Fault.rate_limited())
    [st] = status(tmp_path, client)
    assert (st.status, st.completed, st.failed) == ("completed", 2, 2)
    result = collect(tmp_path, client)
    assert (result.scored, result.unscored) == (1, 3)
    assert (tmp_path / "batch" / "requests-0001.errors.jsonl").is_file()
    g = grades(tmp_path)
    assert "HTTP 500" in (g["a"].error or "")
    assert "did not match the schema" in (g["b"].error or "") and g["b"].raw == "不是JSON"
    assert "HTTP 429" in (g["c"].error or "")
    for tid in "abc":
        assert g[tid].status == "unscored" and all(c.score is None for c in g[tid].criteria)  # never 0
        assert [c.criterion_id for c in g[tid].criteria] == [c.id for c in rubric.criteria()]
    assert g["d"].status == "scored" and g["d"].error is None and g["d"].attempts == 1


def test_expired_batch_keeps_what_ran_and_the_rest_is_unscored(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    mock_server.batch_expire_after_lines = 1
    write(rubric, tmp_path, chats("a", "b", "c"))
    submit(tmp_path, client)
    result = collect(tmp_path, client)
    assert (result.scored, result.unscored) == (1, 2)
    [st] = status(tmp_path, client)
    assert st.status == "expired" and st.collected
    g = grades(tmp_path)
    assert g["a"].status == "scored"
    for tid in "bc":
        assert g[tid].status == "unscored" and g[tid].attempts == 0
        assert "did not run" in (g[tid].error or "") and "batch_expired" in (g[tid].error or "")


def test_collect_waits_for_the_batch_and_stores_it_when_done(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    mock_server.batch_complete_after_polls = 3
    write(rubric, tmp_path, chats("a", "b"))
    [st] = submit(tmp_path, client)
    assert st.status == "validating" and st.batch_id
    assert [s.status for s in status(tmp_path, client)] == ["in_progress"]  # poll 1
    waiting = collect(tmp_path, client)  # poll 2
    assert waiting.waiting == ["batch/requests-0001.jsonl"] and waiting.scored == waiting.unscored == 0
    assert grades(tmp_path) == {}
    done = collect(tmp_path, client)  # poll 3: the batch runs
    assert (done.scored, done.waiting) == (2, [])
    with Store.open(tmp_path) as store:
        run = store.last_run()
        assert run is not None and run["finished_at"] is not None
        assert json.loads(run["summary"])["graded"] == 2


def test_collecting_again_or_from_another_process_stores_nothing_twice(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    write(rubric, tmp_path, chats("a", "b", "c"))
    submit(tmp_path, client)
    first = collect(tmp_path, client)
    assert first.scored == 3
    before = {k: g.model_dump() for k, g in grades(tmp_path).items()}
    assert collect(tmp_path, client) == CollectResult()
    env = {**os.environ, "OPENAI_API_KEY": "test-key"}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.batch", "collect", str(tmp_path), "--base-url", mock_server.base_url],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert {k: g.model_dump() for k, g in grades(tmp_path).items()} == before
    with Store.open(tmp_path) as store:
        assert store.count_grades() == {"scored": 3}


def test_a_partly_collected_batch_resumes_where_it_stopped(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    write(rubric, tmp_path, chats("a", "b", "c"))
    submit(tmp_path, client)
    [st] = status(tmp_path, client)
    output = client.files.content(client.batches.retrieve(st.batch_id or "").output_file_id or "").read()
    partial = tmp_path / "first-line.jsonl"
    partial.write_bytes(output.splitlines(keepends=True)[0])
    assert collect_local(tmp_path, partial).scored == 1  # as if a collect died after one line
    rest = collect(tmp_path, client)
    assert (rest.scored, rest.already_collected) == (2, 1)
    with Store.open(tmp_path) as store:
        assert store.count_grades() == {"scored": 3}


def test_files_split_at_the_request_and_byte_limits(rubric: Rubric, tmp_path: Path) -> None:
    by_count = write(rubric, tmp_path / "count", chats("a", "b", "c", "d", "e"), max_requests=2)
    assert [len(lines(f)) for f in by_count.files] == [2, 2, 1]
    one_line = max(len(line) for f in by_count.files for line in f.read_bytes().splitlines(keepends=True))
    by_size = write(rubric, tmp_path / "size", chats("a", "b", "c"), max_bytes=one_line + 10)
    assert [len(lines(f)) for f in by_size.files] == [1, 1, 1]
    assert all(f.stat().st_size <= one_line + 10 for f in by_size.files)
    ids = [line["custom_id"] for f in by_count.files for line in lines(f)]
    assert len(ids) == len(set(ids)) == 5
    too_small = write(rubric, tmp_path / "tiny", chats("a", "b"), max_bytes=1000)
    assert too_small.files == [] and too_small.rejected == 2
    rejects = lines(tmp_path / "tiny" / "rejects.jsonl")
    assert [r["transcript_id"] for r in rejects] == ["a", "b"] and "over the batch file limit" in rejects[0]["reason"]


def test_finished_and_pending_keys_are_not_written_again_unless_retrying(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    grade_online(mock_server, rubric, chats("a"), tmp_path)
    first = write(rubric, tmp_path, chats("a", "b", "b"))  # b twice in the input is one request
    assert (first.requests, first.skipped) == (1, 2)
    [only] = lines(first.files[0])
    assert only["custom_id"] != grades(tmp_path)["a"].key and "订单b" in only["body"]["messages"][1]["content"]
    assert write(rubric, tmp_path, chats("a", "b")).requests == 0  # b is pending in the first file
    submit(tmp_path, client)
    mock_server.script(Fault.server_error())
    assert collect(tmp_path, client).unscored == 1
    assert write(rubric, tmp_path, chats("a", "b")).requests == 0  # unscored counts as done…
    again = write(rubric, tmp_path, chats("a", "b"), retry_failed=True)  # …unless retrying
    assert again.requests == 1 and again.files[0].name == "requests-0002.jsonl"
    submit(tmp_path, client)
    assert collect(tmp_path, client).scored == 1
    g = grades(tmp_path)
    assert g["b"].status == "scored" and len(g) == 2


def _vllm_line(custom_id: str, body: dict[str, Any] | None, *, status_code: int = 200,
               error: Any = None) -> str:
    """A line as vLLM's run_batch writes it (BatchRequestOutput)."""
    return json.dumps({"id": f"vllm-{custom_id[:8]}", "custom_id": custom_id,
                       "response": {"status_code": status_code, "request_id": "vllm-batch-1", "body": body},
                       "error": error}, ensure_ascii=False) + "\n"


def test_collect_local_reads_vllm_run_batch_output(rubric: Rubric, tmp_path: Path) -> None:
    written = write(rubric, tmp_path, chats("a", "b", "c"))
    requests = {line["body"]["messages"][1]["content"].split("订单")[1][0]: line for line in lines(written.files[0])}
    reply = generate_instance(build_grade_schema(rubric.criteria()).json_schema, random.Random(1))
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "mock-model",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(reply)},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": 900, "completion_tokens": 300, "total_tokens": 1200}}
    output = tmp_path / "vllm-out.jsonl"
    output.write_text(
        _vllm_line(requests["a"]["custom_id"], completion)
        + _vllm_line(requests["b"]["custom_id"], None, status_code=400,
                     error={"error": {"message": "prompt is too long", "type": "BadRequestError", "code": 400}})
        + _vllm_line("not-ours", completion)
        + "not json\n",
        encoding="utf-8",
    )
    result = collect_local(tmp_path, output)
    assert (result.scored, result.unscored, result.unknown, result.unreadable) == (1, 1, 1, 1)
    g = grades(tmp_path)
    assert g["a"].status == "scored" and (g["a"].prompt_tokens, g["a"].completion_tokens) == (900, 300)
    assert [c.score for c in g["a"].criteria] == [reply[c.id]["score"] for c in rubric.criteria()]
    assert g["b"].error == "the batch request failed: HTTP 400: 400: prompt is too long"
    assert "c" not in g  # no line yet: still pending, not unscored
    with Store.open(tmp_path) as store:
        assert [f["collected_at"] is None for f in store.batch_files()] == [True]
    rest = tmp_path / "vllm-rest.jsonl"
    rest.write_text(_vllm_line(requests["c"]["custom_id"], None, status_code=400, error="engine died"),
                    encoding="utf-8")
    assert collect_local(tmp_path, rest).unscored == 1
    assert grades(tmp_path)["c"].error == "the batch request failed: HTTP 400: engine died"
    with Store.open(tmp_path) as store:
        assert [f["collected_at"] is None for f in store.batch_files()] == [False]


def test_a_batch_that_fails_validation_or_is_cancelled_leaves_every_request_unscored(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    broken = write(rubric, tmp_path / "broken", chats("a", "b"))
    with broken.files[0].open("a", encoding="utf-8") as fh:
        fh.write("{not json\n")
    submit(tmp_path / "broken", client)
    assert collect(tmp_path / "broken", client).unscored == 2
    reason = grades(tmp_path / "broken")["a"].error or ""
    assert reason.startswith("the batch failed before any request ran") and "invalid_json_line" in reason

    cancelled = tmp_path / "cancelled"
    write(rubric, cancelled, chats("a"))
    [st] = submit(cancelled, client)
    client.batches.cancel(st.batch_id or "")
    assert collect(cancelled, client).unscored == 1
    assert "cancelled before this request ran" in (grades(cancelled)["a"].error or "")


def test_cli_batch_file_holds_no_personal_data_in_any_field(
    tmp_path: Path, pii_everywhere: Transcript, pii_values: dict[str, str]
) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(pii_everywhere.model_dump_json(exclude_none=True) + "\n", encoding="utf-8")
    out = tmp_path / "run"
    written = CliRunner().invoke(batch_app, ["write", str(inputs), "-o", str(out), "--model", "mock-model",
                                             "--base-url", "http://127.0.0.1:9/v1", "--redact"],
                                 env={"OPENAI_API_KEY": "test-key"})
    assert written.exit_code == 0, written.output
    data = (out / "batch" / "requests-0001.jsonl").read_bytes()
    assert not any(value.encode() in data for value in pii_values.values())
    assert "店铺：张三的店 [手机号1] [邮箱1]".encode() in data


def test_cli_writes_and_reports_status(mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": t.id, "turns": [{"role": turn.role.value, "text": turn.text}
                                                                for turn in t.turns]}, ensure_ascii=False) + "\n"
                              for t in chats("a", "b")), encoding="utf-8")
    out = tmp_path / "run"
    runner = CliRunner()
    env = {"OPENAI_API_KEY": "test-key"}
    written = runner.invoke(batch_app, ["write", str(inputs), "-o", str(out), "--model", "mock-model",
                                        "--no-redact"], env=env)
    assert written.exit_code == 0, written.output
    assert len(lines(out / "batch" / "requests-0001.jsonl")) == 2
    assert re.search(r"写出请求\s+│?\s*2，共 1 个文件", written.output) and "隐私脱敏" in written.output
    submitted = runner.invoke(batch_app, ["submit", str(out), "--base-url", mock_server.base_url], env=env)
    assert submitted.exit_code == 0, submitted.output
    shown = runner.invoke(batch_app, ["status", str(out), "--base-url", mock_server.base_url], env=env)
    assert shown.exit_code == 0 and "completed" in shown.output  # the provider's status id
    assert "已收取" in shown.output and "collected" not in shown.output
    collected = runner.invoke(batch_app, ["collect", str(out), "--base-url", mock_server.base_url], env=env)
    assert collected.exit_code == 0, collected.output
    assert re.search(r"已评分\s+│?\s*2 ", collected.output) and "令牌数" in collected.output
    assert not re.search(r"scored|tokens|already collected|needs review", collected.output)
    assert (out / "scores.csv").is_file() and len(grades(out)) == 2
    mock_server.api_key = "test-key"
    again = tmp_path / "run2"
    assert runner.invoke(batch_app, ["write", str(inputs), "-o", str(again), "--no-redact"], env=env).exit_code == 0
    refused = runner.invoke(batch_app, ["submit", str(again), "--base-url", mock_server.base_url],
                            env={"OPENAI_API_KEY": "wrong"})
    assert refused.exit_code == 2 and "API key" in refused.output


# --- the paths that must never pay twice or lose a good grade (issue 13, section 7) ----------------


def _two_batches(server: MockServer, client: openai.OpenAI, rubric: Rubric, out: Path) -> list[BatchStatus]:
    """Chats a and b, one request file (and batch) each, run to completion."""
    write(rubric, out, chats("a", "b"), max_requests=1)
    submit(out, client)
    return status(out, client)


def test_a_result_file_that_is_gone_does_not_hold_up_the_other_batches(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    first, _ = _two_batches(mock_server, client, rubric, tmp_path)
    client.files.delete(client.batches.retrieve(first.batch_id or "").output_file_id or "")  # 404 from now on
    env = {"OPENAI_API_KEY": "test-key"}
    shown = CliRunner().invoke(batch_app, ["collect", str(tmp_path), "--base-url", mock_server.base_url], env=env)
    assert shown.exit_code == 0, shown.output  # what could be collected is, and the rest is settled
    assert "no Batch API" not in shown.output and "requests-0001" in shown.output and "--retry-failed" in shown.output
    g = grades(tmp_path)
    assert g["b"].status == "scored"
    assert g["a"].status == "unscored" and "could not be downloaded" in (g["a"].error or "")
    with Store.open(tmp_path) as store:
        assert [f["collected_at"] is not None for f in store.batch_files()] == [True, True]
    again = write(rubric, tmp_path, chats("a", "b"), retry_failed=True)
    assert again.requests == 1 and lines(again.files[0])[0]["custom_id"] == f"{g['a'].key}-2"
    submit(tmp_path, client)
    assert collect(tmp_path, client).scored == 1 and grades(tmp_path)["a"].status == "scored"


def test_a_download_that_fails_now_leaves_that_batch_pending_and_collects_the_rest(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    _two_batches(mock_server, client, rubric, tmp_path)
    mock_server.script_api("files.content", Fault.server_error(502))
    result = collect(tmp_path, client)
    [problem] = result.problems
    assert (problem.local_file, problem.next_step) == ("batch/requests-0001.jsonl", "collect again")
    assert "HTTP 502" in problem.reason and result.scored == 1 and set(grades(tmp_path)) == {"b"}
    assert "HTTP 502" in (status(tmp_path, client)[0].problem or "")  # `kefu batch status` shows it
    assert write(rubric, tmp_path, chats("a", "b"), retry_failed=True).requests == 0  # a is still pending
    rest = collect(tmp_path, client)
    assert (rest.scored, rest.problems) == (1, []) and set(grades(tmp_path)) == {"a", "b"}
    assert [s.problem for s in status(tmp_path, client)] == [None, None]


def test_online_grading_skips_requests_pending_in_a_batch_unless_asked(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    mock_server.batch_complete_after_polls = 2
    write(rubric, tmp_path, chats("a", "b"))
    submit(tmp_path, client)
    grade_online(mock_server, rubric, chats("a", "b", "c"), tmp_path)
    assert set(grades(tmp_path)) == {"c"}  # a and b were not sent again
    with Store.open(tmp_path) as store:
        summary = json.loads((store.last_run() or {})["summary"])
    assert summary["pending_batch"] == 2
    grade_online(mock_server, rubric, chats("a", "b"), tmp_path, options=RunOptions(include_pending_batch=True))
    online = grades(tmp_path)
    assert online["a"].status == online["b"].status == "scored"
    assert status(tmp_path, client)[0].status == "in_progress"
    mock_server.script(Fault.server_error(), Fault.server_error())  # the batch fails both lines
    result = collect(tmp_path, client)
    assert (result.scored, result.unscored, result.superseded) == (0, 0, 2)
    assert {k: g.model_dump() for k, g in grades(tmp_path).items()} == {
        k: g.model_dump() for k, g in online.items()}  # the good online grades stay


def test_a_stored_scored_grade_is_never_replaced_by_a_failure(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    scored = Grade(key="k", transcript_id="a", repeat=0, scope="all", status="scored", criteria=[], model="m",
                   attempts=1, created_at=now)
    with Store.open(tmp_path) as store:
        store.save_grade(scored, 1, "r")
        store.save_grade(scored.model_copy(update={"status": "unscored", "error": "HTTP 500"}), 1, "r")
        assert store.count_grades() == {"scored": 1}
        unscored = scored.model_copy(update={"key": "u", "status": "unscored", "error": "HTTP 500"})
        store.save_grade(unscored, 1, "r")
        store.save_grade(unscored.model_copy(update={"status": "scored", "error": None}), 1, "r")
        assert store.count_grades() == {"scored": 2}  # a failure gives way to a grade


@pytest.mark.parametrize("lost", ["files.create", "batches.create", "batches.create in a folder from before 004"])
def test_a_lost_answer_to_an_upload_or_create_never_makes_a_second_batch(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path, lost: str
) -> None:
    write(rubric, tmp_path, chats("a", "b"))
    call: Any = lost.split()[0]
    mock_server.script_api(call, Drop())  # the provider does it; the answer never arrives
    with pytest.raises(TransientLLMError):
        submit(tmp_path, client)
    assert mock_server.batches_created == (1 if call == "batches.create" else 0)
    if "before 004" in lost:  # no intent recorded: the upload's time is all there is to go by
        with Store.open(tmp_path) as store:
            store.update_batch("batch/requests-0001.jsonl", create_started_at=None)
    [st] = submit(tmp_path, client)
    assert mock_server.batches_created == 1 and st.batch_id == client.batches.list().data[0].id
    assert len(client.files.list(purpose="batch").data) == 1  # nor a second upload
    assert submit(tmp_path, client)[0].batch_id == st.batch_id  # and a third run changes nothing
    assert collect(tmp_path, client).scored == 2


def test_an_older_vllm_output_never_replaces_the_retrys_results(rubric: Rubric, tmp_path: Path) -> None:
    written = write(rubric, tmp_path, chats("a", "b"))
    ids = {line["body"]["messages"][1]["content"].split("订单")[1][0]: line["custom_id"]
           for line in lines(written.files[0])}
    reply = generate_instance(build_grade_schema(rubric.criteria()).json_schema, random.Random(2))
    completion = {"id": "c", "object": "chat.completion", "created": 0, "model": "mock-model",
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": json.dumps(reply)},
                               "finish_reason": "stop"}], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}
    old = tmp_path / "old.vllm.jsonl"
    old.write_text(_vllm_line(ids["a"], completion) + _vllm_line(ids["b"], None, status_code=500, error="OOM"),
                   encoding="utf-8")
    assert (collect_local(tmp_path, old).unscored, grades(tmp_path)["b"].status) == (1, "unscored")
    retry = write(rubric, tmp_path, chats("a", "b"), retry_failed=True)
    [retried] = lines(retry.files[0])
    assert retried["custom_id"] == f"{ids['b']}-2"
    again = collect_local(tmp_path, old)  # the old output, collected again before the retry's
    assert (again.scored, again.unscored, again.already_collected) == (0, 0, 2)
    new = tmp_path / "new.vllm.jsonl"
    new.write_text(_vllm_line(retried["custom_id"], completion), encoding="utf-8")
    assert collect_local(tmp_path, new).scored == 1
    assert collect_local(tmp_path, old).already_collected == 2  # and after it
    b = grades(tmp_path)["b"]
    assert b.status == "scored" and b.key == ids["b"]
    with Store.open(tmp_path) as store:
        assert [f["collected_at"] is not None for f in store.batch_files()] == [True, True]


def _completion(message: dict[str, Any], finish_reason: str) -> dict[str, Any]:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "mock-model",
            "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 900, "completion_tokens": 64}}


_REFUSED = _completion({"content": None, "refusal": "抱歉，我无法协助处理此请求。"}, "stop")
_CUT_OFF = _completion({"content": '{"greeting": {"evidence": [{"turn": 1, "quo'}, "length")


def test_a_refusal_and_a_cut_off_reply_are_named_in_a_batch_and_online(
    mock_server: MockServer, client: openai.OpenAI, rubric: Rubric, tmp_path: Path
) -> None:
    write(rubric, tmp_path / "batch", chats("a", "b"))
    submit(tmp_path / "batch", client)
    mock_server.script(Reply(body=_REFUSED), Reply(body=_CUT_OFF))
    assert collect(tmp_path / "batch", client).unscored == 2
    mock_server.script(Reply(body=_REFUSED), Reply(body=_CUT_OFF))
    grade_online(mock_server, rubric, chats("a", "b"), tmp_path / "online")
    calls = [r for r in mock_server.requests if r.path.endswith("/chat/completions")]
    assert len(calls) == 2  # no re-ask: asking again mends neither
    for out in (tmp_path / "batch", tmp_path / "online"):
        g = grades(out)
        assert g["a"].error == "the model refused to grade: 抱歉，我无法协助处理此请求。"
        assert g["a"].raw == "抱歉，我无法协助处理此请求。"
        assert g["b"].error is not None and "cut off at max_tokens (64 completion tokens)" in g["b"].error
        assert "Invalid JSON" not in g["b"].error and g["b"].raw == _CUT_OFF["choices"][0]["message"]["content"]


def test_file_limits_are_openais_in_bytes_and_a_higher_choice_is_warned_about(
    rubric: Rubric, tmp_path: Path
) -> None:
    assert MAX_BYTES == 200_000_000 and MAX_REQUESTS == 50_000
    assert over_limits(MAX_REQUESTS, MAX_BYTES) == []
    assert len(over_limits(MAX_REQUESTS + 1, 200 * 1024**2)) == 2
    inputs = tmp_path / "in.jsonl"
    inputs.write_text(json.dumps({"id": "a", "turns": [{"role": "customer", "text": "在吗"}]}) + "\n",
                      encoding="utf-8")
    shown = CliRunner().invoke(batch_app, ["write", str(inputs), "-o", str(tmp_path / "run"), "--model", "m",
                                           "--no-redact", "--max-bytes", str(200 * 1024**2)])
    assert shown.exit_code == 0 and "200,000,000" in shown.output


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def _or_any(shaped: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A value of the expected shape (mostly), or any JSON value in its place."""
    return st.one_of(shaped, shaped, shaped, _JSON)


_MESSAGE = st.fixed_dictionaries({"role": st.just("assistant"), "content": _or_any(st.text()),
                                  "refusal": _or_any(st.none())})
_CHOICE = st.fixed_dictionaries({"message": _or_any(_MESSAGE),
                                 "finish_reason": _or_any(st.sampled_from(["stop", "length"]))})
_USAGE = st.fixed_dictionaries({"prompt_tokens": _JSON, "completion_tokens": _JSON, "prompt_tokens_details": _JSON})
_BODY = st.fixed_dictionaries({"choices": _or_any(st.lists(_or_any(_CHOICE), max_size=2)), "usage": _or_any(_USAGE),
                               "model": _JSON})
_RESULT_LINE = st.one_of(
    st.fixed_dictionaries({"custom_id": _JSON, "error": _JSON, "response": _or_any(st.fixed_dictionaries(
        {"status_code": _or_any(st.sampled_from([200, 400, 500])), "body": _or_any(_BODY)}))}),
    st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
)


def _line_with(message: Any = None, usage: Any = None) -> dict[str, Any]:
    body = {"choices": [{"message": message or {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
            "usage": usage or {}}
    return {"custom_id": "k", "error": None, "response": {"status_code": 200, "body": body}}


@given(line=_RESULT_LINE)
@example(line=_line_with(usage={"prompt_tokens": "many"}))
@example(line=_line_with(usage=[1]))
@example(line=_line_with(message={"role": "assistant", "content": 5}))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_result_line_is_a_reply_or_a_failure_and_then_a_grade(line: dict[str, Any]) -> None:
    rubric = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")
    reply, failure, attempts = _outcome(line)
    assert (reply is None) != (failure is None) and attempts in (0, 1)
    grade = grade_from_reply(chats("a")[0], key="k", repeat=0, scope="all", criteria=rubric.criteria(),
                             model="m", response_mode="json_schema", result=reply, failure=failure, attempts=attempts)
    assert (grade.status == "unscored") == (grade.error is not None)
    assert grade.status == "unscored" or all(c.score is not None for c in grade.criteria)


def test_kefu_grade_says_what_a_pending_batch_holds_and_grades_it_only_when_asked(
    mock_server: MockServer, tmp_path: Path
) -> None:
    from pipeline.cli.main import app

    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps({"id": t.id, "turns": [{"role": turn.role.value, "text": turn.text}
                                                                for turn in t.turns]}, ensure_ascii=False) + "\n"
                              for t in chats("a", "b")), encoding="utf-8")
    out, runner = tmp_path / "run", CliRunner()
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": mock_server.base_url}
    common = ["-o", str(out), "--model", "mock-model"]
    assert runner.invoke(batch_app, ["write", str(inputs), *common], env=env).exit_code == 0
    assert runner.invoke(batch_app, ["submit", str(out)], env=env).exit_code == 0
    skipped = runner.invoke(app, ["grade", str(inputs), *common], env=env)
    assert skipped.exit_code == 0, skipped.output
    assert "在未收取的批次中" in skipped.output and grades(out) == {}
    assert not [r for r in mock_server.requests if r.path.endswith("/chat/completions")]
    both = runner.invoke(app, ["grade", str(inputs), *common, "--include-pending-batch"], env=env)
    assert both.exit_code == 0, both.output
    assert set(grades(out)) == {"a", "b"} and "在未收取的批次中" not in both.output


@pytest.mark.parametrize("redact", [False, True])
def test_batch_written_checks_are_current_for_a_later_online_run(rubric: Rubric, tmp_path: Path, redact: bool) -> None:
    # The checks a batch write stores carry the original chat's hash, as the runner's do, so `kefu grade`
    # in the same folder finds them current and checks nothing again.
    checker = ServiceChecker(load_lexicons(DEFAULT_LEXICONS))
    items = chats("a", "b")
    write(rubric, tmp_path, items, checker=checker, redaction=RedactionConfig() if redact else None)
    with Store.open(tmp_path) as store:
        for chat in items:
            stored = store.transcript_checks(chat.id)
            assert stored is not None and stored["transcript_hash"] == transcript_hash(chat)
            assert checker.is_current(stored, transcript_hash(chat))


_CHAT_TEXT = LINE_BREAK_TEXT.filter(bool)


@given(turn=_CHAT_TEXT, shop=_CHAT_TEXT, rubric_name=_CHAT_TEXT, model=_CHAT_TEXT)
@example(turn="a\u2028b", shop="店\x85", rubric_name="评分表\u2029", model="m\u2028")
def test_any_text_makes_batch_lines_that_each_parse_alone_and_round_trip(
    turn: str, shop: str, rubric_name: str, model: str
) -> None:
    """Chat text, a rubric's wording and the model name, with every Unicode line boundary: a reader that splits
    on all of them (str.splitlines) still sees one request per line, holding exactly what was meant."""
    seed = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")
    rubric = Rubric.model_validate({**seed.model_dump(mode="json", by_alias=True), "name": rubric_name}, by_alias=True)
    [chat] = chats("a")
    chat = chat.model_copy(update={"shop": shop, "turns": [chat.turns[0].model_copy(update={"text": turn}),
                                                           chat.turns[1]]})
    with tempfile.TemporaryDirectory() as folder, Store.open(Path(folder)) as store:
        written = write_batch_files([chat], rubric=rubric, prompts=PromptSet("zh"), model=model, sampling=Sampling(),
                                    store=store, out_dir=Path(folder))
        [file] = written.files
        text = file.read_text(encoding="utf-8")
    assert text.endswith("\n")
    [line] = [json.loads(one) for one in text.splitlines()]
    assert line["body"]["model"] == model
    assert line["body"]["messages"] == PromptSet("zh").messages(rubric, rubric.criteria(), chat)


def test_an_output_file_with_undecodable_or_absurd_lines_skips_them_and_collects_the_rest(
    rubric: Rubric, tmp_path: Path
) -> None:
    """A vLLM output file is the user's: a GBK line, binary or JSON nested 100,000 deep stopped the whole collect
    with a traceback (UnicodeDecodeError, RecursionError)."""
    written = write(rubric, tmp_path, chats("a"))
    [request] = lines(written.files[0])
    output = tmp_path / "vllm-out.jsonl"
    output.write_bytes("坏行\n".encode("gbk") + b"\x00\xff\xfe\n" + b"[" * 100_000 + b"\n"
                       + _vllm_line(request["custom_id"], None, status_code=400, error="engine died").encode())
    result = collect_local(tmp_path, output)
    assert (result.unscored, result.unreadable) == (1, 3)
    assert grades(tmp_path)["a"].error == "the batch request failed: HTTP 400: engine died"
