"""The rate limits runs have learned, per endpoint and model: kept so that the next run starts at that pace.

A run that learned an endpoint's limits (from OpenAI's `x-ratelimit-*` headers, or measured between
refusals: `pipeline.llm.rate_gate`) writes them to `rate_limits.json` in kefu-qa's cache folder
(`KEFU_CACHE_DIR`, else `$XDG_CACHE_HOME/kefu-qa`, else `~/.cache/kefu-qa`; `KEFU_LIMITS_FILE` names
another file). A later run against the same base URL and model paces from its first request at that
rate instead of finding the limit again through refusals, and starts with the bucket's burst when the
headers said its size; the endpoint's headers, or its refusals, still correct it. `--rpm` / `--tpm`
override it: a run with either set neither reads nor writes it. The file holds rates and bucket sizes
only (no key, no chat); a file that cannot be read is ignored and rewritten.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.llm.local.model import cache_root
from pipeline.llm.pacing import Limits

_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class LearnedLimit(BaseModel):
    """One endpoint and model's limits as last learned."""

    model_config = ConfigDict(extra="forbid")

    requests_per_second: float | None = Field(default=None, gt=0, description="Requests a second paced at.")
    tokens_per_second: float | None = Field(default=None, gt=0, description="Tokens a second paced at.")
    requests_burst: float | None = Field(default=None, gt=0, description="The request bucket's size, if said.")
    tokens_burst: float | None = Field(default=None, gt=0, description="The token bucket's size, if said.")
    updated: datetime = Field(description="When a run last learned them (UTC).")


class LimitsFile(BaseModel):
    """The whole file: one entry per "base URL model"."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(default=1, description="File format version.")
    limits: dict[str, LearnedLimit] = Field(default_factory=dict, description='Keyed by "<base URL> <model>".')


def limits_path() -> Path:
    """Where learned limits are kept: `KEFU_LIMITS_FILE`, else `rate_limits.json` in the cache folder."""
    if env := os.environ.get("KEFU_LIMITS_FILE"):
        return Path(env)
    return cache_root() / "rate_limits.json"


def load_learned_limits(base_url: str | None, model: str, path: Path | None = None) -> Limits:
    """What an earlier run learned about this endpoint and model (nothing known: both None)."""
    entry = _read(path or limits_path()).limits.get(_key(base_url, model))
    if entry is None:
        return Limits()
    return Limits(entry.requests_per_second, entry.tokens_per_second, entry.requests_burst, entry.tokens_burst)


def save_learned_limits(base_url: str | None, model: str, learned: Limits, path: Path | None = None) -> None:
    """Keep what this run learned (a limit it did not learn keeps its earlier value); never fails a run."""
    if learned.requests is None and learned.tokens is None:
        return
    path = path or limits_path()
    data = _read(path)
    key = _key(base_url, model)
    before = data.limits.get(key)
    data.limits[key] = LearnedLimit(  # a limit not learned keeps its earlier rate and burst
        requests_per_second=learned.requests or (before.requests_per_second if before else None),
        tokens_per_second=learned.tokens or (before.tokens_per_second if before else None),
        requests_burst=learned.requests_burst if learned.requests else before.requests_burst if before else None,
        tokens_burst=learned.tokens_burst if learned.tokens else before.tokens_burst if before else None,
        updated=datetime.now(UTC),
    )
    with contextlib.suppress(OSError):  # a read-only home must not fail a finished run
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                         prefix=".rate_limits-", suffix=".tmp") as handle:
            handle.write(data.model_dump_json(indent=1))
        os.replace(handle.name, path)  # whole or not at all, even with two runs finishing at once


def _key(base_url: str | None, model: str) -> str:
    return f"{(base_url or _DEFAULT_BASE_URL).rstrip('/')} {model}"


def _read(path: Path) -> LimitsFile:
    try:
        return LimitsFile.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return LimitsFile()
