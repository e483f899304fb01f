"""Compact mode for small local models: limits in the schema, the same limits in the prompt, its own resume keys."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.grading.endpoints import LOCAL_SEED, ResolvedEndpoint, local_completion_cap
from pipeline.grading.grader import Grader
from pipeline.grading.job import GradeJob, JobResult, local_sampling, run_job, use_compact
from pipeline.grading.prompting import PromptSet, transcript_hash
from pipeline.grading.schema import (
    COMPACT_QUOTE_CHARS,
    COMPACT_REASONING_CHARS,
    GradeSchema,
    build_grade_schema,
    compact_reply_token_bound,
)
from pipeline.grading.settings import Settings, load_settings
from pipeline.inputs.transcripts import read_transcripts
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Grade, Sampling
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Criterion, Level, Rubric
from pipeline.store.rows import grade_key
from pipeline.store.store import Store
from pipeline.testing.instances import generate_instance
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content

REPO = Path(__file__).resolve().parents[2]
RUBRIC = REPO / "rubric" / "ecommerce_cs.yaml"
RUBRICS = [RUBRIC, REPO / "rubric" / "dch1_quality.yaml"]

# Two criteria written out here, so the pinned hash below does not move when a rubric file is edited.
CRITERIA = [
    Criterion(id="greeting", name="首次问候", max=3,
              levels=[Level(points=0, description="没有"), Level(points=3, description="有")]),
    Criterion(id="closing", name="结束语", max=2,
              levels=[Level(points=0, description="无"), Level(points=1, description="一般"),
                      Level(points=2, description="好")]),
]
# build_grade_schema(CRITERIA).schema_hash of the code at commit 2759849, before compact mode existed:
# obtained with `git archive HEAD pipeline | tar -x -C /tmp/headsnap` and calling that copy's function on
# these same two criteria. The default schema must not change, byte for byte.
HEAD_SCHEMA_HASH = "e33e629d496c713df81c0c839e097fd1e5d24d4a0944e33df71939072fb26ba6"


def chat(tid: str = "t1") -> Transcript:
    t0 = datetime(2026, 3, 2, 2, 15, 3, tzinfo=UTC)
    return Transcript(id=tid, turns=[
        Turn(role=Role.customer, text="请问这款有货吗？", time=t0),
        Turn(role=Role.agent, text="亲，您好，这款有现货的呢，今天下单当天发货哦", time=t0),
    ])


def criterion_defs(schema: GradeSchema) -> list[dict[str, Any]]:
    root = schema.json_schema
    return [root["$defs"][root["properties"][cid]["$ref"].rsplit("/", 1)[1]] for cid in schema.criterion_ids]


# --- schema ----------------------------------------------------------------------------------------


def test_the_default_schema_is_unchanged() -> None:
    default = build_grade_schema(CRITERIA)
    assert default.schema_hash == HEAD_SCHEMA_HASH
    assert build_grade_schema(CRITERIA, compact=False) is default
    assert "maxLength" not in json.dumps(default.json_schema)  # OpenAI strict mode rejects it


def branches(schema: GradeSchema, cid: str) -> dict[str, dict[str, Any]]:
    """A compact criterion's reply definitions by name: the score alone at the maximum, the full reply below."""
    root = schema.json_schema
    refs = [b["$ref"] for b in root["properties"][cid]["anyOf"]]
    return {ref.rsplit("/", 1)[1]: root["$defs"][ref.rsplit("/", 1)[1]] for ref in refs}


def test_the_compact_schema_carries_the_limits_and_says_them(rubric: Rubric) -> None:
    schema = build_grade_schema(rubric.criteria(), compact=True)
    assert schema.schema_hash != build_grade_schema(rubric.criteria()).schema_hash
    for c in rubric.criteria():
        full, below = branches(schema, c.id).values()
        assert full["properties"]["score"]["const"] == c.max and list(full["properties"]) == ["score"]
        props = below["properties"]
        assert list(props) == ["score", "evidence", "reasoning"]  # the score first: the grammar then knows
        assert props["score"]["enum"] == [p for p in c.points if p != c.max]
        assert props["evidence"]["maxItems"] == 1
        assert props["reasoning"]["maxLength"] == COMPACT_REASONING_CHARS == 20
        assert str(COMPACT_REASONING_CHARS) in props["reasoning"]["description"]
        quote = schema.json_schema["$defs"][props["evidence"]["items"]["$ref"].rsplit("/", 1)[1]]["properties"]["quote"]
        assert quote["maxLength"] == COMPACT_QUOTE_CHARS == 16
        assert str(COMPACT_QUOTE_CHARS) in quote["description"]
        assert schema.scores_allowed(c.id) == sorted(c.points)


def test_a_criterion_at_its_maximum_is_the_score_alone() -> None:
    model = build_grade_schema(CRITERIA, compact=True).model
    parsed = model.model_validate_json('{"greeting": {"score": 3}, "closing": {"score": 2}}')
    assert (parsed.greeting.evidence, parsed.greeting.reasoning) == ([], "")  # type: ignore[attr-defined]
    with pytest.raises(ValidationError):  # below the maximum the evidence and reasoning are owed
        model.model_validate_json('{"greeting": {"score": 0}, "closing": {"score": 2}}')
    with pytest.raises(ValidationError):  # and at it they are not written
        model.model_validate_json('{"greeting": {"score": 3, "evidence": [], "reasoning": "好"}, '
                                  '"closing": {"score": 2}}')


def reply(criteria: list[Criterion], quotes: list[str], reasoning: str) -> str:
    return json.dumps({c.id: {"evidence": [{"turn": 1, "quote": q} for q in quotes], "reasoning": reasoning,
                              "score": c.points[0]} for c in criteria}, ensure_ascii=False)


@pytest.mark.parametrize(("quotes", "reasoning", "field"), [
    (["字" * 17], "短", "quote"),
    (["一", "二"], "短", "evidence"),
    (["字" * 16], "理" * 21, "reasoning"),
])
def test_validation_enforces_the_compact_limits(quotes: list[str], reasoning: str, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        build_grade_schema(CRITERIA, compact=True).model.model_validate_json(reply(CRITERIA, quotes, reasoning))
    build_grade_schema(CRITERIA).model.model_validate_json(reply(CRITERIA, quotes, reasoning))  # default: fine


def test_replies_at_the_limits_are_valid() -> None:
    build_grade_schema(CRITERIA, compact=True).model.model_validate_json(reply(CRITERIA, ["字" * 16], "理" * 20))


@pytest.mark.parametrize("path", RUBRICS, ids=lambda p: p.name)
def test_the_mock_server_generates_valid_compact_replies(path: Path) -> None:
    schema = build_grade_schema(load_rubric(path).criteria(), compact=True)
    for seed in range(50):
        schema.model.model_validate(generate_instance(schema.json_schema, random.Random(seed)))


def test_the_reply_token_bound_is_the_longest_indented_reply() -> None:
    # The longest reply for `greeting` (points 0/3, so a one-digit score), indented by 2, line by line:
    # {  1 | "greeting": { 2+10+3=15 | "score": 0, 4+7+2+1+1=15 | "evidence": [ 4+10+3=17 | { 7 |
    # "turn": 9999, 8+6+2+5=21 | "quote": 16 字 8+7+2+18=35 | } 7 | ], 6 | "reasoning": 20 字 4+11+2+22=39 |
    # } 3 | } 1  → 167 characters on 12 lines, plus 11 newlines = 178.
    assert compact_reply_token_bound(CRITERIA[:1]) == 178
    assert compact_reply_token_bound(CRITERIA) > compact_reply_token_bound(CRITERIA[:1])


# --- prompts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RUBRICS, ids=lambda p: p.name)
def test_the_default_system_prompt_is_the_one_with_the_old_literal_numbers(path: Path, tmp_path: Path) -> None:
    # Before compact mode system.j2 said 40 and 80 literally; putting them back must render the same text.
    copy = tmp_path / "zh"
    copy.mkdir()
    for f in (REPO / "prompts" / "zh").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    system = (copy / "system.j2").read_text("utf-8")
    assert "{{ max_quote_chars }}" in system and "{{ max_reasoning_chars }}" in system
    (copy / "system.j2").write_text(system.replace("{{ max_quote_chars }}", "40")
                                    .replace("{{ max_reasoning_chars }}", "80"), encoding="utf-8")
    rubric = load_rubric(path)
    old = PromptSet("zh", tmp_path).system(rubric, rubric.criteria())
    assert PromptSet("zh").system(rubric, rubric.criteria()) == old


def test_the_compact_system_prompt_states_the_compact_limits(rubric: Rubric) -> None:
    prompts = PromptSet("zh")
    default = prompts.system(rubric, rubric.criteria())
    compact = prompts.system(rubric, rubric.criteria(), compact=True)
    assert "最多 3 条证据" in default and "每条不超过 40 字" in default and "不超过 80 字" in default
    assert "最多 1 条证据" in compact and "不超过 16 字" in compact and "不超过 20 字" in compact
    assert "满分的项只写分数" in compact and "满分的项只写分数" not in default
    assert prompts.system(rubric, rubric.criteria()) == default  # each mode cached on its own
    assert prompts.system(rubric, rubric.criteria(), compact=True) == compact


# --- the grader, against a real server -------------------------------------------------------------


async def _no_sleep(_: float) -> None:
    """Retry waits are injected so tests never sleep."""


def grade_once(server: MockServer, rubric: Rubric, *, compact: bool) -> Grade:
    async def go() -> Grade:
        client = LLMClient(Endpoint(server.base_url, "test-key", timeout=30))
        grader = Grader(rubric, PromptSet(rubric.language), client, model="mock-model", sampling=Sampling(),
                        retry=RetryPolicy(attempts=2), sleep=_no_sleep, compact=compact)
        try:
            return await grader.grade(chat(), key="k", repeat=0, scope="all", criteria=rubric.criteria())
        finally:
            await client.close()

    return asyncio.run(go())


def test_a_compact_grade_sends_the_limits_in_schema_and_prompt(mock_server: MockServer, rubric: Rubric) -> None:
    grade = grade_once(mock_server, rubric, compact=True)
    [body] = [r.body for r in mock_server.requests]
    assert body["response_format"]["json_schema"]["schema"] == build_grade_schema(rubric.criteria(),
                                                                                  compact=True).json_schema
    sent = json.dumps(body["response_format"])
    assert f'"maxLength": {COMPACT_QUOTE_CHARS}' in sent and f'"maxLength": {COMPACT_REASONING_CHARS}' in sent
    assert "不超过 16 字" in body["messages"][0]["content"]
    assert grade.status == "scored"
    for cg in grade.criteria:
        assert len(cg.evidence) <= 1 and len(cg.reasoning) <= COMPACT_REASONING_CHARS
        assert all(len(e.quote) <= COMPACT_QUOTE_CHARS for e in cg.evidence)


def test_an_endpoint_ignoring_the_limits_gets_the_re_ask(mock_server: MockServer, rubric: Rubric) -> None:
    too_long = reply(rubric.criteria(), ["亲，您好，这款有现货的呢，今天下单当天发货哦"], "有问候")  # 22 字: fine
    too_long = too_long.replace("有问候", "理" * (COMPACT_REASONING_CHARS + 1), 1)
    mock_server.script(Content(text=too_long))
    grade = grade_once(mock_server, rubric, compact=True)
    first, second = (r.body for r in mock_server.requests)
    assert grade.status == "scored" and grade.attempts == 2
    assert second["messages"][:2] == first["messages"]
    assert "reasoning" in second["messages"][-1]["content"]  # the validation error went back to the model
    mock_server.reset()
    mock_server.script(Content(text=too_long))
    assert grade_once(mock_server, rubric, compact=False).attempts == 1  # the default asks, does not enforce


# --- the job: mode choice, completion cap, resume keys --------------------------------------------


@pytest.mark.parametrize(("configured", "expected"), [(None, LOCAL_SEED), (7, 7)])
def test_the_local_model_samples_with_a_fixed_seed_unless_one_is_configured(configured: int | None,
                                                                            expected: int) -> None:
    settings = Settings(seed=configured)
    local = ResolvedEndpoint(Endpoint("http://127.0.0.1:1/v1", None), "m", local=True, max_tokens=300, seed=LOCAL_SEED)
    assert local_sampling(settings, local) == Sampling(temperature=0.0, seed=expected, max_tokens=300)
    remote = ResolvedEndpoint(Endpoint("http://127.0.0.1:1/v1", None), "m", local=False)
    assert local_sampling(settings, remote) == settings.sampling  # another endpoint gets what was configured


@pytest.mark.parametrize(("forced", "local", "expected"), [
    (None, True, True), (None, False, False), (False, True, False), (True, False, True),
])
def test_compact_is_on_for_the_local_model_unless_forced(forced: bool | None, local: bool, expected: bool) -> None:
    job = GradeJob(inputs=[], rubric_path=RUBRIC, out_dir=Path("out"), compact=forced)
    assert use_compact(job, local=local) is expected


def test_the_local_cap_fits_compact_replies_unless_one_is_configured(rubric: Rubric) -> None:
    criteria = rubric.criteria()
    defaults = load_settings(environ={})
    bound = compact_reply_token_bound(criteria)
    assert defaults.max_tokens is not None and bound < defaults.max_tokens  # 13 criteria fit below 4096
    assert local_completion_cap(defaults, criteria, compact=True) == bound
    assert local_completion_cap(defaults, criteria, compact=False) == defaults.max_tokens
    configured = load_settings(overrides={"max_tokens": 900}, environ={})
    assert local_completion_cap(configured, criteria, compact=True) == 900
    many = [c.model_copy(update={"id": f"{c.id}_{i}"}) for i in range(3) for c in criteria]
    assert local_completion_cap(defaults, many, compact=True) == defaults.max_tokens  # never above the default


def run(src: Path, out: Path, server: MockServer, compact: bool | None) -> JobResult:
    settings = load_settings(overrides={"base_url": server.base_url, "model": "mock-model", "concurrency": 2},
                             environ={"OPENAI_API_KEY": "test-key"})
    job = GradeJob(inputs=[src], rubric_path=RUBRIC, out_dir=out, compact=compact)
    return asyncio.run(run_job(job, settings))


def test_switching_mode_regrades_and_default_keys_are_unchanged(
    mock_server: MockServer, rubric: Rubric, tmp_path: Path
) -> None:
    chats = [chat("a"), chat("b")]
    src = tmp_path / "chats.jsonl"
    src.write_text("".join(c.model_dump_json() + "\n" for c in chats), encoding="utf-8")
    out = tmp_path / "out"

    plain = run(src, out, mock_server, None)  # a loopback mock server is not the local model: off
    assert (plain.summary.graded, plain.summary.skipped) == (2, 0)
    assert all("maxLength" not in json.dumps(r.body) for r in mock_server.requests)
    with Store.open(out) as store:
        plain_keys = store.finished_keys()
    # Without compact mode the key is built exactly as before it existed (no "compact" option).
    read = [t for t in read_transcripts([src]) if isinstance(t, Transcript)]
    expected = {grade_key(transcript_hash=transcript_hash(t), rubric_hash=rubric.content_hash,
                          template_hash=PromptSet("zh").template_hash, model="mock-model", sampling=Sampling(),
                          repeat=0, scope="all", options=None) for t in read}
    assert len(expected) == 2
    assert len(plain_keys) == 2 and all(key in plain_keys for key in expected)

    mock_server.reset()
    compact = run(src, out, mock_server, True)
    assert (compact.summary.graded, compact.summary.skipped) == (2, 0)  # regraded, not reused
    assert all("maxLength" in json.dumps(r.body) for r in mock_server.requests)
    assert run(src, out, mock_server, True).summary.skipped == 2
    assert run(src, out, mock_server, False).summary.skipped == 2
    with Store.open(out) as store:
        keys = store.finished_keys()
    assert len(keys) == 4 and all(key in keys for key in expected)  # the plain two and two new


def test_the_grade_command_takes_compact(tmp_path: Path) -> None:
    src = tmp_path / "chats.jsonl"
    src.write_text(chat().model_dump_json() + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_")) or k == "KEFU_LIMITS_FILE"}
    with MockServer() as server:
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test"}
        proc = subprocess.run([sys.executable, "-m", "pipeline", "grade", str(src), "--out", str(tmp_path / "o"),
                               "--model", "mock-model", "--compact"], env=env, cwd=REPO, text=True,
                              capture_output=True, timeout=120, check=False)
        [body] = [r.body for r in server.requests]
    assert proc.returncode == 0, proc.stderr
    assert f'"maxLength": {COMPACT_QUOTE_CHARS}' in json.dumps(body["response_format"])
