"""Settings for a grading job: defaults, then a TOML config file, then the environment, then flags.

API keys come only from the environment (OPENAI_API_KEY, or the variable a config names with
`api_key_env`), are held as SecretStr, and are never written to the store, logs or reports.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from pipeline.errors import ConfigError
from pipeline.grader import ResponseMode, Sampling
from pipeline.llm import Endpoint

DEFAULT_CONFIG = Path("kefu.toml")


class Settings(BaseModel):
    """Everything a grading job needs besides its inputs."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    api_key_env: str = Field(default="OPENAI_API_KEY", description="Name of the environment variable with the key.")
    api_key: SecretStr | None = Field(default=None, description="Read from `api_key_env`; never from a file.")
    model: str = Field(default="gpt-4o-mini", description="Model name as the endpoint knows it.")
    temperature: float | None = Field(default=0.0, description="Sampling temperature.")
    seed: int | None = Field(default=None, description="Sampling seed.")
    max_tokens: int | None = Field(default=4096, description="Completion token cap per call.")
    timeout: float | None = Field(
        default=None, gt=0,
        description="Seconds before a request counts as timed out; None: adapts to the endpoint's latencies.")
    response_format: ResponseMode = Field(default="auto", description="json_schema, json_object, or auto-detect.")
    concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at most.")
    rpm: float | None = Field(default=None, gt=0, description="Requests per minute at most.")
    tpm: float | None = Field(default=None, gt=0, description="Tokens per minute at most.")
    context_window: int = Field(default=32768, gt=0, description="Model context in tokens, for the length check.")
    retry_attempts: int = Field(default=6, ge=1, description="Attempts per call before a grade is unscored.")

    @property
    def sampling(self) -> Sampling:
        """The sampling part, which enters every resume key."""
        return Sampling(temperature=self.temperature, seed=self.seed, max_tokens=self.max_tokens)

    @property
    def endpoint_configured(self) -> bool:
        """True if the user named an endpoint or a key; otherwise the embedded local model is used."""
        return self.base_url is not None or self.api_key is not None

    def endpoint(self) -> Endpoint:
        """The configured endpoint for the client; the key leaves its SecretStr only here."""
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        if self.timeout is None:
            return Endpoint(self.base_url, key, adaptive_timeout=True)
        return Endpoint(self.base_url, key, self.timeout)

    def public(self) -> dict[str, Any]:
        """Settings safe to store in a run record: no key, only whether one was set."""
        data = self.model_dump(mode="json", exclude={"api_key"})
        data["api_key_set"] = self.api_key is not None
        return data


def load_settings(config: Path | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Merge defaults < config file < environment < flags (`overrides`, None values ignored)."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    path = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is not None:
        try:
            data.update(tomllib.loads(path.read_text(encoding="utf-8")).get("kefu", {}))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config: {exc}") from None
        if "api_key" in data:
            raise ConfigError(f"{path}: put the API key in the environment, not the config file "
                              f"(set api_key_env to the variable's name)")
    if env.get("OPENAI_BASE_URL"):
        data.setdefault("base_url", env["OPENAI_BASE_URL"])
    if env.get("KEFU_MODEL"):
        data.setdefault("model", env["KEFU_MODEL"])
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    key_var = data.get("api_key_env", "OPENAI_API_KEY")
    if env.get(key_var):
        data["api_key"] = env[key_var]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from None
