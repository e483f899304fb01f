"""Cost forecasts and actual costs: hand-computed figures on tiny templates, and the packaged price table."""

from __future__ import annotations

import asyncio
from datetime import date
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.grading.costs import (
    COMPLETION_TOKENS_PER_CRITERION,
    UNKNOWN_MODEL,
    ModelPrice,
    PriceTable,
    actual_cost,
    estimate_job,
    load_prices,
)
from pipeline.grading.grader import Grader
from pipeline.grading.prompting import PromptSet
from pipeline.inputs.tokens import estimate_tokens
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Reject, Role, Transcript, Turn
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Criterion, Dimension, Group, Level, Rubric
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]

# USD per 1M tokens: 2 in, 0.5 cached in, 8 out, half price in batch.
PRICES = PriceTable(
    as_of=date(2025, 6, 1), source="test",
    models={
        "m": ModelPrice(currency="USD", input=2.0, cached_input=0.5, output=8.0, batch_discount=0.5),
        "no-cache-no-batch": ModelPrice(currency="CNY", input=2.0, output=8.0),
    },
)


def test_actual_cost_hand_computed() -> None:
    # 600k uncached × 2/1M = 1.2; 400k cached × 0.5/1M = 0.2; 250k out × 8/1M = 2.0 → 3.4, batch half → 1.7
    assert actual_cost(1_000_000, 400_000, 250_000, "m", PRICES) == pytest.approx(3.4)
    assert actual_cost(1_000_000, 400_000, 250_000, "m", PRICES, batch=True) == pytest.approx(1.7)
    # No cached price: cached tokens cost the full 2/1M → 1M × 2 + 250k × 8 = 2 + 2 = 4.0; no batch API → no discount
    assert actual_cost(1_000_000, 400_000, 250_000, "no-cache-no-batch", PRICES) == pytest.approx(4.0)
    assert actual_cost(1_000_000, 400_000, 250_000, "no-cache-no-batch", PRICES, batch=True) == pytest.approx(4.0)
    assert actual_cost(1, 0, 1, "gpt-99", PRICES) is None


def _tiny(tmp_path: Path) -> tuple[Rubric, PromptSet]:
    """Two 0/1 criteria and templates whose renderings can be counted by hand."""
    root = tmp_path / "zz"
    root.mkdir()
    (root / "system.j2").write_text("规则{% for c in criteria %}项{% endfor %}", encoding="utf-8")
    (root / "user.j2").write_text("{% for t in turns %}{{ t.text }}{% endfor %}", encoding="utf-8")
    (root / "reask.j2").write_text("重来", encoding="utf-8")
    levels = [Level(points=0, description="无"), Level(points=1, description="有")]
    criteria = [Criterion(id=i, name=i, max=1, levels=levels) for i in ("a", "b")]
    rubric = Rubric(id="tiny", version="1", name="小", language="zz", total=2, dimensions=[
        Dimension(id="d", name="维", points=2, groups=[Group(id="g", name="组", points=2, criteria=criteria)])])
    return rubric, PromptSet("zz", tmp_path)


def _items() -> list[Transcript | Reject]:
    return [
        Transcript(id="t1", turns=[Turn(role=Role.customer, text="你好"), Turn(role=Role.agent, text="在的")]),
        Reject(file="in.jsonl", line=2, reason="broken"),
        Transcript(id="t2", turns=[Turn(role=Role.customer, text="abcdef")]),
    ]


def test_estimate_whole_rubric_calls_hand_computed(tmp_path: Path) -> None:
    rubric, prompts = _tiny(tmp_path)
    est = estimate_job(_items(), rubric=rubric, prompts=prompts, per_criterion=False, repeats=2,
                       max_completion_tokens_estimate=None, model="m", prices=PRICES, batch=False)
    # system "规则项项\n": 4 CJK + 1 ASCII char (⌈1/3⌉ = 1) = 5 tokens
    # t1 user "你好在的\n" = 4 + 1 = 5; t2 user "abcdef\n" = ⌈7/3⌉ = 3
    # 2 transcripts × 2 repeats × 1 call = 4 requests; prompt = 2×(5+5) + 2×(5+3) = 36; prefix = 4×5 = 20
    assert (est.transcripts, est.rejected, est.requests) == (2, 1, 4)
    assert (est.prompt_tokens, est.shared_prefix_tokens) == (36, 20)
    assert est.shared_prefix_share == pytest.approx(20 / 36)
    # completion: 120 per criterion × 2 criteria × 4 requests = 960
    assert COMPLETION_TOKENS_PER_CRITERION == 120
    assert est.completion_tokens == 960 and est.completion_tokens_per_request is None
    # no cache: (36×2 + 960×8)/1M = 0.007752
    # cached: the first request writes the 5-token prefix, 15 tokens read it: (21×2 + 15×0.5 + 960×8)/1M = 0.0077295
    assert est.cost == pytest.approx(0.007752)
    assert est.cost_with_caching == pytest.approx(0.0077295)
    assert est.currency == "USD" and est.notes == [] and est.prices_as_of == date(2025, 6, 1)
    batch = estimate_job(_items(), rubric=rubric, prompts=prompts, per_criterion=False, repeats=2,
                         max_completion_tokens_estimate=None, model="m", prices=PRICES, batch=True)
    assert batch.cost == pytest.approx(0.003876) and batch.cost_with_caching == pytest.approx(0.00386475)


def test_estimate_per_criterion_with_completion_override(tmp_path: Path) -> None:
    rubric, prompts = _tiny(tmp_path)
    est = estimate_job(_items(), rubric=rubric, prompts=prompts, per_criterion=True, repeats=1,
                       max_completion_tokens_estimate=50, model="m", prices=PRICES, batch=False)
    # each scope's system "规则项\n" = 3 + 1 = 4 tokens; 2 transcripts × 2 scopes = 4 requests
    # prompt = t1 2×(4+5) + t2 2×(4+3) = 32; prefix = 4×4 = 16; two distinct prefixes written, 8 tokens read
    assert (est.requests, est.prompt_tokens, est.shared_prefix_tokens) == (4, 32, 16)
    assert est.completion_tokens == 4 * 50 and est.completion_tokens_per_request == 50
    # no cache: (32×2 + 200×8)/1M = 0.001664; cached: (24×2 + 8×0.5 + 1600)/1M = 0.001652
    assert est.cost == pytest.approx(0.001664)
    assert est.cost_with_caching == pytest.approx(0.001652)


def test_unknown_model_has_no_price_but_a_size(tmp_path: Path) -> None:
    rubric, prompts = _tiny(tmp_path)
    est = estimate_job(_items(), rubric=rubric, prompts=prompts, per_criterion=False, repeats=1,
                       max_completion_tokens_estimate=None, model="gpt-99", prices=PRICES, batch=True)
    assert est.notes == [UNKNOWN_MODEL] == ["价格表中没有这个模型，无法估价"]
    assert est.cost is None and est.cost_with_caching is None and est.currency is None
    assert est.prompt_tokens == 18  # (5+5) + (5+3)


def test_model_without_batch_or_cache_price_says_so(tmp_path: Path) -> None:
    rubric, prompts = _tiny(tmp_path)
    est = estimate_job(_items(), rubric=rubric, prompts=prompts, per_criterion=False, repeats=1,
                       max_completion_tokens_estimate=None, model="no-cache-no-batch", prices=PRICES, batch=True)
    assert len(est.notes) == 2 and "没有批量折扣" in est.notes[0] and "没有缓存输入价" in est.notes[1]
    assert est.cost == est.cost_with_caching and est.currency == "CNY"


def test_forecast_counts_exactly_what_the_grader_sends(mock_server: MockServer) -> None:
    rubric = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")
    prompts = PromptSet(rubric.language)
    chat = Transcript(id="c1", turns=[Turn(role=Role.customer, text="请问这款有货吗？"),
                                      Turn(role=Role.agent, text="亲，您好，有现货的呢～")])

    async def grade_online() -> None:
        client = LLMClient(Endpoint(mock_server.base_url, "k"))
        grader = Grader(rubric, prompts, client, model="gpt-4o-mini", sampling=Sampling())
        try:
            for scope, crits in grader.scopes(True):
                await grader.grade(chat, key=scope, repeat=0, scope=scope, criteria=crits)
        finally:
            await client.close()

    asyncio.run(grade_online())
    sent = [r.body for r in mock_server.requests if r.path.endswith("/chat/completions")]
    sent_tokens = sum(estimate_tokens(m["content"]) for body in sent for m in body["messages"])
    est = estimate_job([chat], rubric=rubric, prompts=prompts, per_criterion=True, repeats=1,
                       max_completion_tokens_estimate=None, model="gpt-4o-mini", prices=load_prices(), batch=False)
    assert est.requests == len(sent) == len(rubric.criteria())
    assert est.prompt_tokens == sent_tokens
    assert est.shared_prefix_tokens == sum(estimate_tokens(body["messages"][0]["content"]) for body in sent)


def test_packaged_price_table_is_dated_and_covers_the_common_models() -> None:
    table = load_prices()
    assert table.as_of.year >= 2025
    for model in ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4.1", "gpt-4o", "deepseek-chat", "qwen-plus", "qwen-turbo"):
        entry = table.price(model)
        assert entry is not None and entry.currency in ("USD", "CNY"), model
        assert entry.cached_input is None or entry.cached_input < entry.input, model
    text = (REPO / "pipeline" / "data" / "prices.yaml").read_text(encoding="utf-8")
    assert "EDIT THIS FILE" in text and "CHECK EVERY LINE" in text


def test_a_price_table_with_a_typo_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "prices.yaml"
    bad.write_text("as_of: 2025-06-01\nsource: me\nmodels:\n  m: {currency: USD, input: 1, output: 2, ouput: 3}\n",
                   encoding="utf-8")
    with pytest.raises(ConfigError, match="ouput"):
        load_prices(bad)
    bad.write_text("as_of: 2025-06-01\nsource: me\nmodels:\n  m: {currency: EUR, input: 1, output: 2}\n",
                   encoding="utf-8")
    with pytest.raises(ConfigError, match="currency"):
        load_prices(bad)


def test_a_price_table_with_a_repeated_key_or_in_gbk_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "prices.yaml"
    # The second gpt-4o-mini, or the second input, silently replaced the first.
    entry = "  gpt-4o-mini: {currency: USD, input: 0.15, output: 0.6}\n"
    table.write_text(f"as_of: 2025-06-01\nsource: me\nmodels:\n{entry}{entry}", encoding="utf-8")
    with pytest.raises(ConfigError, match="found duplicate key 'gpt-4o-mini'"):
        load_prices(table)
    table.write_text("as_of: 2025-06-01\nsource: me\nmodels:\n  m:\n    currency: USD\n    input: 1\n    output: 2\n"
                     "    input: 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="found duplicate key 'input'"):
        load_prices(table)
    table.write_bytes("as_of: 2025-06-01\nsource: 我的价格\n".encode("gbk"))
    with pytest.raises(ConfigError, match=r"^价格表 .* 不是 UTF-8 文本：第 27 个字节无法解码"):
        load_prices(table)
