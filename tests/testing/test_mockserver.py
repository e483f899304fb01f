"""pipeline.testing.mockserver: the real openai SDK against the real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import random
import urllib.request
from collections.abc import Iterator
from typing import Any, Literal

import openai
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from pydantic import BaseModel, ConfigDict, Field

from pipeline.testing.instances import InstanceUnsupportedError, generate_instance
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content, Delay, Drop, Fault, Reply, lognormal_latency

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "顾客：发货了吗？ 客服：亲，今天发。"}]


class Quote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    turn: int = Field(ge=1, le=40)
    text: str = Field(min_length=2, max_length=5)


class Verdict(BaseModel):
    """Exercises $defs/$ref (Quote), enum, const, anyOf with null, min/maxItems and numeric bounds."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["verdict"]
    reason: str
    evidence: list[Quote] = Field(min_length=1, max_length=3)
    level: Literal["好", "中", "差"]
    score: Literal[0, 1, 2]
    confidence: float = Field(gt=0, lt=1)
    note: str | None


def json_schema_format(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    return {"type": "json_schema", "json_schema": {"name": model.__name__, "strict": True, "schema": schema}}


def client(server: MockServer, api_key: str = "test", **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=api_key, max_retries=0, **kwargs)


@pytest.fixture
def llm(mock_server: MockServer) -> Iterator[openai.OpenAI]:
    """One client per test: building one costs tens of milliseconds."""
    with client(mock_server) as shared:
        yield shared


def complete(
    llm: openai.OpenAI, messages: list[ChatCompletionMessageParam] = USER, **kwargs: Any
) -> ChatCompletion:
    reply: ChatCompletion = llm.chat.completions.create(model="qwen-test", messages=messages, **kwargs)
    return reply


def ask(llm: openai.OpenAI, messages: list[ChatCompletionMessageParam] = USER, **kwargs: Any) -> str:
    reply = complete(llm, messages, **kwargs)
    assert reply.choices[0].message.content is not None
    return reply.choices[0].message.content


def test_json_schema_reply_validates_and_request_is_recorded(
    mock_server: MockServer, llm: openai.OpenAI
) -> None:
    response_format = json_schema_format(Verdict)
    # $ref/$defs are covered only as long as pydantic emits them for the nested Quote.
    assert "$defs" in response_format["json_schema"]["schema"]
    reply = complete(llm, response_format=response_format)
    verdict = Verdict.model_validate_json(reply.choices[0].message.content or "")
    assert verdict.kind == "verdict"
    assert reply.model == "qwen-test"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    [record] = mock_server.requests
    assert record.path == "/v1/chat/completions"
    assert record.status == 200
    assert record.body["messages"] == USER
    assert record.body["response_format"] == response_format


def test_every_seed_gives_a_valid_verdict() -> None:
    schema = Verdict.model_json_schema()
    for seed in range(200):
        Verdict.model_validate(generate_instance(schema, random.Random(seed)))


def test_generator_honours_keywords_pydantic_does_not_emit() -> None:
    schema = {
        "type": "object",
        "properties": {
            "maybe": {"type": ["integer", "null"], "minimum": 3, "maximum": 3},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 2, "uniqueItems": True},
            "code": {"type": "string", "minLength": 12, "maxLength": 12},
            "ref": {"$ref": "#/definitions/Fixed"},
            "merged": {"allOf": [{"$ref": "#/definitions/Fixed"}]},
        },
        "required": ["maybe", "tags", "code", "ref", "merged"],
        "definitions": {"Fixed": {"const": {"x": 1}}},
    }
    for seed in range(50):
        value = generate_instance(schema, random.Random(seed))
        assert value["maybe"] == 3  # the only integer in [3, 3]; null is never preferred
        assert sorted(value["tags"]) == ["a", "b"]
        assert len(value["code"]) == 12
        assert value["ref"] == value["merged"] == {"x": 1}


def test_unsupported_keyword_is_a_400_not_an_invalid_reply(
    mock_server: MockServer, llm: openai.OpenAI
) -> None:
    with pytest.raises(InstanceUnsupportedError, match="pattern"):
        generate_instance({"type": "string", "pattern": "^[0-9]+$"}, random.Random(0))
    pattern_format = {
        "type": "json_schema",
        "json_schema": {"name": "p", "schema": {"type": "string", "pattern": "x"}},
    }
    with pytest.raises(openai.BadRequestError, match="pattern"):
        ask(llm, response_format=pattern_format)


def test_identical_requests_get_identical_replies_and_random_mode_varies(
    mock_server: MockServer, llm: openai.OpenAI
) -> None:
    levels = {"type": "object", "properties": {"level": {"enum": list("abcdefgh")}}, "required": ["level"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "l", "schema": levels}}
    assert ask(llm, response_format=fmt) == ask(llm, response_format=fmt)
    by_content = {ask(llm, [{"role": "user", "content": str(i)}], response_format=fmt) for i in range(10)}
    assert len(by_content) > 1  # the choice follows the messages, not a constant
    mock_server.choice = "random"
    repeated = {ask(llm, response_format=fmt) for _ in range(10)}
    assert len(repeated) > 1


def test_json_object_takes_schema_from_prompt_then_fallback(
    mock_server: MockServer, llm: openai.OpenAI
) -> None:
    json_object = {"type": "json_object"}
    assert ask(llm, response_format=json_object) == "{}"
    assert ask(llm) == "好的，已收到。"
    mock_server.fallback_schema = {"type": "object", "properties": {"x": {"const": 2}}, "required": ["x"]}
    assert json.loads(ask(llm, response_format=json_object)) == {"x": 2}
    embedded = '只输出 JSON。<json_schema>{"type": "object", "properties": {"x": {"const": 1}}}</json_schema>'
    prompt: list[ChatCompletionMessageParam] = [{"role": "system", "content": embedded}, *USER]
    assert json.loads(ask(llm, prompt, response_format=json_object)) == {"x": 1}


def test_scripted_rate_limit_then_normal_reply(mock_server: MockServer, llm: openai.OpenAI) -> None:
    mock_server.script(Fault.rate_limited(retry_after=0))
    with pytest.raises(openai.RateLimitError) as caught:
        ask(llm)
    assert caught.value.response.headers["retry-after"] == "0"
    assert caught.value.code == "rate_limit_exceeded"
    assert mock_server.script_remaining == 0
    assert ask(llm) == "好的，已收到。"
    assert mock_server.stats().by_status == {429: 1, 200: 1}


def test_rate_limit_takes_so_many_calls_per_window_and_refuses_the_rest() -> None:
    with MockServer(rate_limit=(3, 30.0), rate_limit_retry_after=True) as server, client(server) as llm:
        for _ in range(3):
            ask(llm)
        with pytest.raises(openai.RateLimitError) as caught:
            ask(llm)
        wait = float(caught.value.response.headers["retry-after"])
        assert 0 < wait <= 30  # until the first call leaves the window
        assert server.stats().by_status == {200: 3, 429: 1}
        server.rate_limit = (4, 30.0)  # refused calls took no place in the window: one more fits
        ask(llm)
        server.rate_limit_retry_after = False
        with pytest.raises(openai.RateLimitError) as caught:
            ask(llm)
        assert "retry-after" not in caught.value.response.headers
        server.reset()  # empties the window
        ask(llm)


def test_scripted_401_and_configured_api_key(mock_server: MockServer, llm: openai.OpenAI) -> None:
    mock_server.script(Fault.unauthorized())
    with pytest.raises(openai.AuthenticationError):
        ask(llm)
    mock_server.api_key = "sekret"
    with pytest.raises(openai.AuthenticationError):
        ask(llm)  # sends "test"
    reply = complete(client(mock_server, api_key="sekret"))
    assert reply.choices[0].message.content
    last = mock_server.requests[-1]
    assert last.has_authorization
    assert last.headers is not None
    assert "authorization" not in {name.lower() for name in last.headers}
    assert "sekret" not in json.dumps(last.headers)


def test_delay_trips_the_client_timeout(mock_server: MockServer) -> None:
    mock_server.script(Delay(seconds=30))
    with pytest.raises(openai.APITimeoutError):
        complete(client(mock_server, timeout=0.2))


def test_dropped_connection(mock_server: MockServer, llm: openai.OpenAI) -> None:
    mock_server.script(Drop())
    with pytest.raises(openai.APIConnectionError) as caught:
        ask(llm)
    assert not isinstance(caught.value, openai.APITimeoutError)
    assert mock_server.requests[0].status is None
    assert mock_server.stats().unanswered == 1


def test_scripted_raw_content_and_full_body(mock_server: MockServer, llm: openai.OpenAI) -> None:
    body = {
        "id": "chatcmpl-scripted",
        "object": "chat.completion",
        "created": 0,
        "model": "other",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "length"}
        ],
    }
    mock_server.script(Content(text='{"bad":'), Reply(body=body), Delay(seconds=0, then=Content(text="late")))
    assert ask(llm, response_format={"type": "json_object"}) == '{"bad":'
    reply = complete(llm)
    assert (reply.id, reply.choices[0].finish_reason) == ("chatcmpl-scripted", "length")
    assert ask(llm) == "late"


def test_reject_json_schema_but_json_object_works(mock_server: MockServer, llm: openai.OpenAI) -> None:
    mock_server.reject_json_schema = True
    with pytest.raises(openai.BadRequestError) as caught:
        ask(llm, response_format=json_schema_format(Verdict))
    assert caught.value.param == "response_format"
    assert "json_schema is not supported" in caught.value.message
    assert ask(llm, response_format={"type": "json_object"}) == "{}"


def test_error_rate_answers_that_fraction_with_500(mock_server: MockServer, llm: openai.OpenAI) -> None:
    mock_server.error_rate = 0.5
    failures = 0
    for _ in range(40):
        try:
            ask(llm)
        except openai.InternalServerError:
            failures += 1
    assert 0 < failures < 40
    assert mock_server.stats().by_status == {500: failures, 200: 40 - failures}


async def fire(server: MockServer, count: int, limit: int | None = None) -> None:
    """Send `count` requests at once from one event loop, at most `limit` at a time when given."""
    semaphore = asyncio.Semaphore(limit or count)
    async with openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as aclient:

        async def one(i: int) -> None:
            async with semaphore:
                await aclient.chat.completions.create(
                    model="m", messages=[{"role": "user", "content": str(i)}]
                )

        await asyncio.gather(*(one(i) for i in range(count)))


def test_max_in_flight_counts_real_concurrency(mock_server: MockServer) -> None:
    # The latency only has to outlast sending 20 requests from one loop (about 10 ms here); 0.5 s is margin.
    mock_server.latency = 0.5
    asyncio.run(fire(mock_server, 20))
    assert mock_server.max_in_flight == 20
    mock_server.reset()
    mock_server.latency = 0.05
    asyncio.run(fire(mock_server, 20, limit=5))
    assert 1 <= mock_server.max_in_flight <= 5
    assert mock_server.stats().requests == 20


def test_more_than_256_connections_at_once(mock_server: MockServer) -> None:
    # Sending 300 takes about 0.3 s of client CPU here; a 2 s latency keeps them all open together.
    mock_server.latency = 2.0
    mock_server.record_bodies = False
    asyncio.run(fire(mock_server, 300))
    assert mock_server.stats().by_status == {200: 300}
    assert mock_server.max_in_flight > 256
    assert all(record.body is None and record.headers is None for record in mock_server.requests)


def test_cached_tokens_follow_the_longest_seen_prefix(mock_server: MockServer, llm: openai.OpenAI) -> None:
    system = "你是电商客服质检员。" * 10  # 100 characters

    def usage(first: str) -> tuple[int, int]:
        reply = complete(llm, [{"role": "system", "content": first}, {"role": "user", "content": "第一句"}])
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        return reply.usage.prompt_tokens, reply.usage.prompt_tokens_details.cached_tokens or 0

    # prompt tokens: ceil((100 + 3) / 2) = 52; cached: shared characters // 2.
    assert usage(system) == (52, 0)
    assert usage(system) == (52, 50)
    assert usage(system[:40] + "x" * 60) == (52, 20)  # 40 shared characters
    mock_server.reset()
    assert usage(system) == (52, 0)


def test_health_models_and_reset(mock_server: MockServer, llm: openai.OpenAI) -> None:
    with urllib.request.urlopen(mock_server.base_url.removesuffix("/v1") + "/health") as response:
        assert json.load(response) == {"status": "ok"}
    assert [model.id for model in llm.models.list()] == ["mock-model"]
    mock_server.script(Drop())
    assert [record.path for record in mock_server.requests] == ["/health", "/v1/models"]
    mock_server.reset()
    assert mock_server.requests == []
    assert mock_server.script_remaining == 0


def test_padding_adds_reasoning_text(mock_server: MockServer, llm: openai.OpenAI) -> None:
    plain = complete(llm).usage
    mock_server.pad_chars = 50
    reply = complete(llm)
    assert len(getattr(reply.choices[0].message, "reasoning_content", "")) == 50
    assert reply.usage is not None and plain is not None
    assert reply.usage.completion_tokens == plain.completion_tokens + 25  # 50 characters at 2 a token


def test_lognormal_latency_has_the_requested_mean() -> None:
    draw, rng = lognormal_latency(0.8), random.Random(0)
    samples = [draw(rng) for _ in range(20_000)]
    # sigma 0.5: the sample mean's standard error is 0.8 * sqrt(e^0.25 - 1) / sqrt(20000) ≈ 0.003.
    assert sum(samples) / len(samples) == pytest.approx(0.8, abs=0.015)
    assert max(samples) > 2 * 0.8  # a right tail, unlike a fixed latency


def test_runs_inside_an_event_loop() -> None:
    async def scenario() -> tuple[str, int]:
        async with (
            MockServer() as server,
            openai.AsyncOpenAI(base_url=server.base_url, api_key="test", max_retries=0) as aclient,
        ):
            reply = await aclient.chat.completions.create(model="m", messages=USER)
            return reply.choices[0].message.content or "", len(server.requests)

    assert asyncio.run(scenario()) == ("好的，已收到。", 1)


def test_files_and_batches_list_newest_first_page_by_page_and_api_faults_play_once() -> None:
    with MockServer() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        uploaded = [client.files.create(file=(f"f{i}.jsonl", b"{}\n"), purpose="batch").id for i in range(5)]
        assert [f.id for f in client.files.list(purpose="batch", limit=2)] == uploaded[::-1]  # three pages
        assert list(client.files.list(purpose="batch_output")) == []
        batches = [client.batches.create(input_file_id=uploaded[0], endpoint="/v1/chat/completions",
                                         completion_window="24h").id for _ in range(3)]
        assert [b.id for b in client.batches.list(limit=2)] == batches[::-1]
        assert server.batches_created == 3
        server.script_api("batches.create", Fault.server_error(503), Drop())
        with pytest.raises(openai.InternalServerError):  # answered instead: nothing was created
            client.batches.create(input_file_id=uploaded[0], endpoint="/v1/chat/completions", completion_window="24h")
        assert server.batches_created == 3
        with pytest.raises(openai.APIConnectionError):  # created, and the answer lost
            client.batches.create(input_file_id=uploaded[0], endpoint="/v1/chat/completions", completion_window="24h")
        assert server.batches_created == 4
        assert client.files.delete(uploaded[1]).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.content(uploaded[1])
