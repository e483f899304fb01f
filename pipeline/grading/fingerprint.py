"""The judge's fingerprint: the model, endpoint, rubric, prompts and sampling a check measured, and how two differ.

Agreement figures hold only for the judge that was checked. A check records the fingerprint of the run
that made its grades (the run folder's last run); `kefu grade --checked-by` compares it with the judge
about to grade, and `kefu report --compare` with a previous check's. The endpoint is the base URL without
credentials, query or fragment, or "embedded local model" (its loopback port changes every start).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field

LOCAL_ENDPOINT = "embedded local model"
FIELD_NAMES = {
    "model": "模型", "endpoint": "接口地址", "rubric_hash": "评分标准", "template_hash": "提示词模板",
    "temperature": "temperature", "seed": "采样 seed", "max_tokens": "max_tokens",
}


class JudgeFingerprint(BaseModel):
    """What makes a judge the same judge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="The model name as the endpoint knows it.")
    endpoint: str = Field(description="Base URL without credentials, or 'embedded local model'.")
    rubric_hash: str = Field(description="Content hash of the rubric.")
    template_hash: str = Field(description="Content hash of the prompt templates.")
    temperature: float | None = Field(description="Sampling temperature sent.")
    seed: int | None = Field(description="Sampling seed sent.")
    max_tokens: int | None = Field(description="Completion cap sent.")


def endpoint_name(base_url: str | None, *, local: bool) -> str:
    """The endpoint as a fingerprint names it: no user, password, query or fragment."""
    if local:
        return LOCAL_ENDPOINT
    if not base_url:
        return "https://api.openai.com/v1"  # the openai client's default
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def run_fingerprint(run: Mapping[str, Any], settings: Mapping[str, Any]) -> JudgeFingerprint:
    """The fingerprint of a stored run: its `runs` row and that row's decoded settings record."""
    return JudgeFingerprint(
        model=str(run["model"]),
        endpoint=endpoint_name(settings.get("base_url"), local=bool(settings.get("local", False))),
        rubric_hash=str(run["rubric_hash"]), template_hash=str(run["template_hash"]),
        temperature=settings.get("temperature"), seed=settings.get("seed"), max_tokens=settings.get("max_tokens"),
    )


def fingerprint_differences(checked: JudgeFingerprint, now: JudgeFingerprint) -> list[str]:
    """Each differing part in words (Chinese), e.g. '模型：gpt-4o → gpt-4o-mini'; empty when the same judge."""
    out = []
    for name, label in FIELD_NAMES.items():
        before, after = getattr(checked, name), getattr(now, name)
        if before != after:
            short = name.endswith("_hash")
            out.append(f"{label}：{str(before)[:12] if short else before} → {str(after)[:12] if short else after}")
    return out
