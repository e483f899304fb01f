"""What a grading job costs: the editable price table, the forecast before a run, the bill after it.

The forecast renders every prompt exactly as the grader will send it and counts tokens with
`pipeline.inputs.tokens.estimate_tokens` (conservative for Chinese). Completion tokens cannot be rendered, so
they are assumed per criterion (see COMPLETION_TOKENS_PER_CRITERION) unless the caller knows better.
Prices are per 1M tokens in the table entry's own currency; nothing is converted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ConfigError
from pipeline.grading.grader import grade_scopes
from pipeline.grading.prompting import PromptSet
from pipeline.inputs.tokens import estimate_tokens
from pipeline.models.transcript import Reject, Transcript
from pipeline.oserrors import os_problem, utf8_problem
from pipeline.paths import DATA_DIR
from pipeline.rubric.model import Rubric
from pipeline.yamlload import load_yaml

DEFAULT_PRICES = DATA_DIR / "prices.yaml"

COMPLETION_TOKENS_PER_CRITERION = 120
"""Assumed reply tokens per criterion, from the reply schema (evidence, reasoning, score).

Up to three verbatim quotes with turn numbers (about 20-50 tokens of Chinese), one or two sentences of
reasoning (30-60), the score, keys and punctuation (about 20): some 120 tokens. A pilot run tells the
real figure (completion tokens ÷ criteria graded); pass it as `max_completion_tokens_estimate`.
"""

UNKNOWN_MODEL = "价格表中没有这个模型，无法估价"


class ModelPrice(BaseModel):
    """One model's prices per 1M tokens."""

    model_config = ConfigDict(extra="forbid")

    currency: Literal["USD", "CNY"] = Field(description="Currency of every price in this entry.")
    input: float = Field(ge=0, description="Prompt tokens at the normal price.")
    cached_input: float | None = Field(
        default=None, ge=0, description="Prompt tokens served from the prefix cache; None: no discount."
    )
    output: float = Field(ge=0, description="Completion tokens.")
    batch_discount: float | None = Field(
        default=None, ge=0, lt=1, description="Fraction off every price in the Batch API; None: no batch API."
    )


class PriceTable(BaseModel):
    """The price table: dated, because prices change and a forecast is only as good as its date."""

    model_config = ConfigDict(extra="forbid")

    as_of: date = Field(description="When the prices were taken; check them again if this is old.")
    source: str = Field(description="Where the prices come from.")
    models: dict[str, ModelPrice] = Field(description="Prices by the model name sent to the endpoint.")

    def price(self, model: str) -> ModelPrice | None:
        """The entry for exactly this model name, or None."""
        return self.models.get(model)


class CostEstimate(BaseModel):
    """A job's forecast: its size in requests and tokens, and what it costs with and without prefix caching."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="Model name the forecast prices.")
    batch: bool = Field(description="True if priced at the Batch API discount.")
    transcripts: int = Field(description="Transcripts that would be graded.")
    rejected: int = Field(description="Inputs the readers rejected (not graded, not priced).")
    requests: int = Field(description="Chat completions: transcripts × repeats × calls per transcript.")
    prompt_tokens: int = Field(description="Estimated prompt tokens over every request.")
    shared_prefix_tokens: int = Field(description="The part of prompt_tokens that is the system prompt.")
    shared_prefix_share: float = Field(description="shared_prefix_tokens / prompt_tokens (0 with no requests).")
    completion_tokens: int = Field(description="Estimated completion tokens over every request.")
    completion_tokens_per_request: int | None = Field(
        description="The override given, or None when COMPLETION_TOKENS_PER_CRITERION × criteria was used."
    )
    currency: str | None = Field(description="USD or CNY; None for an unknown model.")
    cost: float | None = Field(description="Estimated cost with no cache hits; None for an unknown model.")
    cost_with_caching: float | None = Field(
        description="Estimated cost if every request after the first of its scope reads the system prompt "
                    "from the provider's cache: a lower bound, real hit rates are lower."
    )
    prices_as_of: date = Field(description="Date of the price table used.")
    notes: list[str] = Field(default_factory=list, description="Caveats, e.g. an unknown model.")


def load_prices(path: Path | None = None) -> PriceTable:
    """The price table at `path`, else the packaged default (pipeline/data/prices.yaml)."""
    source = path or DEFAULT_PRICES
    try:
        # Unique keys: a second `gpt-4o-mini:` or `input:` would silently replace the first.
        data = load_yaml(source.read_text(encoding="utf-8"), unique_keys=True)
        return PriceTable.model_validate(data)
    except OSError as exc:
        raise ConfigError(f"无法读取价格表 {source}：{os_problem(exc)} (cannot read the price table)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"价格表 {source} {utf8_problem(exc)}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"价格表 {source} 不是有效的 YAML：{exc} (not valid YAML)") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{source}: invalid price table: {problems}") from None


def actual_cost(prompt_tokens: int, cached_tokens: int, completion_tokens: int, model: str, prices: PriceTable,
                batch: bool = False) -> float | None:
    """What the tokens a run reported cost at the table's prices, in the entry's currency; None if unpriced.

    `batch` applies the batch discount, when the model has one, to every price.
    """
    price = prices.price(model)
    if price is None:
        return None
    return _cost(price, prompt_tokens, cached_tokens, completion_tokens, batch)


def _cost(price: ModelPrice, prompt: int, cached: int, completion: int, batch: bool) -> float:
    cached_price = price.input if price.cached_input is None else price.cached_input
    total = ((prompt - cached) * price.input + cached * cached_price + completion * price.output) / 1_000_000
    if batch and price.batch_discount is not None:
        total *= 1 - price.batch_discount
    return total


def estimate_job(
    items: Iterable[Transcript | Reject],
    *,
    rubric: Rubric,
    prompts: PromptSet,
    per_criterion: bool,
    repeats: int,
    max_completion_tokens_estimate: int | None,
    model: str,
    prices: PriceTable,
    batch: bool,
) -> CostEstimate:
    """Forecast a job before running it: every prompt is rendered as the grader renders it, and counted.

    Streams `items`, so a backlog of millions is forecast in constant memory. Prompt tokens are
    repeated per repeat, as each repeat is its own request.
    """
    scopes = grade_scopes(rubric, per_criterion)
    transcripts = rejected = prompt = prefix = 0
    system_tokens: dict[str, int] = {}
    for item in items:
        if isinstance(item, Reject):
            rejected += 1
            continue
        transcripts += 1
        for scope, criteria in scopes:
            system, *rest = prompts.messages(rubric, criteria, item)
            if scope not in system_tokens:
                system_tokens[scope] = estimate_tokens(system["content"])
            prefix += system_tokens[scope] * repeats
            prompt += (system_tokens[scope] + sum(estimate_tokens(m["content"]) for m in rest)) * repeats
    requests = transcripts * repeats * len(scopes)
    per_transcript = sum(
        COMPLETION_TOKENS_PER_CRITERION * len(criteria) if max_completion_tokens_estimate is None
        else max_completion_tokens_estimate
        for _, criteria in scopes
    )
    completion = transcripts * repeats * per_transcript
    # With caching, the first request of each scope writes its system prompt to the cache; the rest read it.
    cached = prefix - sum(system_tokens.values())
    price = prices.price(model)
    notes: list[str] = []
    if price is None:
        notes.append(UNKNOWN_MODEL)
    elif batch and price.batch_discount is None:
        notes.append(f"价格表中 {model} 没有批量折扣：按在线请求估价")
    if price is not None and price.cached_input is None:
        notes.append(f"价格表中 {model} 没有缓存输入价：此处缓存不省钱")
    return CostEstimate(
        model=model,
        batch=batch,
        transcripts=transcripts,
        rejected=rejected,
        requests=requests,
        prompt_tokens=prompt,
        shared_prefix_tokens=prefix,
        shared_prefix_share=prefix / prompt if prompt else 0.0,
        completion_tokens=completion,
        completion_tokens_per_request=max_completion_tokens_estimate,
        currency=price.currency if price else None,
        cost=_cost(price, prompt, 0, completion, batch) if price else None,
        cost_with_caching=_cost(price, prompt, cached, completion, batch) if price else None,
        prices_as_of=prices.as_of,
        notes=notes,
    )
