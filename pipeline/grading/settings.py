"""Settings for a grading job: defaults, then a TOML config file, then the environment, then flags.

API keys come only from the environment (OPENAI_API_KEY, or the variable a config names with
`api_key_env`), are held as SecretStr, and are never written to the store, logs or reports.

Every value is checked when the settings are loaded, before anything is sent: a value no endpoint
would take (a temperature of nan or -5, max_tokens 0, an empty model, a base URL that is not http(s))
stops the command with one message naming where it came from (the flag, the config key or the
environment variable) and the value. A config file may hold only a `[kefu]` table.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_core import ErrorDetails

from pipeline.errors import ConfigError
from pipeline.grading.redaction import is_loopback
from pipeline.llm.client import Endpoint, base_url_problem
from pipeline.models.grade import ResponseMode, Sampling
from pipeline.oserrors import os_problem, utf8_problem

DEFAULT_CONFIG = Path("kefu.toml")


class Settings(BaseModel):
    """Everything a grading job needs besides its inputs."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(default=None, description="OpenAI-compatible base URL, e.g. http://host:8000/v1.")
    api_key_env: str = Field(default="OPENAI_API_KEY", min_length=1,
                             description="Name of the environment variable with the key.")
    api_key: SecretStr | None = Field(default=None, description="Read from `api_key_env`; never from a file.")
    model: str = Field(default="gpt-4o-mini", pattern=r"\S", description="Model name as the endpoint knows it.")
    temperature: float | None = Field(default=0.0, ge=0, le=2, allow_inf_nan=False,
                                      description="Sampling temperature (OpenAI's range, 0 to 2).")
    seed: int | None = Field(default=None, description="Sampling seed.")
    max_tokens: int | None = Field(default=4096, ge=1, description="Completion token cap per call.")
    timeout: float | None = Field(
        default=None, gt=0, allow_inf_nan=False,
        description="Seconds before a request counts as timed out; None: adapts to the endpoint's latencies.")
    response_format: ResponseMode = Field(default="auto", description="json_schema, json_object, or auto-detect.")
    concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at most.")
    rpm: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Requests per minute at most.")
    tpm: float | None = Field(default=None, gt=0, allow_inf_nan=False, description="Tokens per minute at most.")
    context_window: int = Field(default=32768, gt=0, description="Model context in tokens, for the length check.")
    retry_attempts: int = Field(default=6, ge=1, description="Attempts per call before a grade is unscored.")

    @field_validator("temperature", "seed", "max_tokens", "timeout", "concurrency", "rpm", "tpm", "context_window",
                     "retry_attempts", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: object) -> object:
        """pydantic reads `max_tokens = true` in kefu.toml as 1 (every reply cut off after one token)."""
        if isinstance(value, bool):
            raise ValueError("true/false is not a number")
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        """Anything else fails only after a minute of retries (`not a url`, `ftp://…`, `localhost:8000`, port 0)
        or with a traceback at the first request (port 99999, a hostname that is not valid IDNA)."""
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("not an http(s) URL with a host")
            problem = base_url_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @property
    def sampling(self) -> Sampling:
        """The sampling part, which enters every resume key."""
        return Sampling(temperature=self.temperature, seed=self.seed, max_tokens=self.max_tokens)

    @property
    def endpoint_configured(self) -> bool:
        """True if the user named an endpoint or a key; otherwise the embedded local model is used."""
        return self.base_url is not None or self.api_key is not None

    def check_endpoint(self) -> None:
        """Raise now, before a progress bar or a request, what `endpoint()` would raise.

        With no endpoint configured the embedded model grades, but only when nothing was asked for: a
        model named by a flag, config or KEFU_MODEL that no endpoint can serve is an error, not a quiet
        switch to a different model.
        """
        if self.endpoint_configured:
            self.endpoint()
        elif "model" in self.model_fields_set:
            raise ConfigError(
                f"要求使用模型 {self.model}，但没有能提供它的端点：环境变量 {self.api_key_env} 未设置，也没有 "
                f"--base-url（或 OPENAI_BASE_URL）。请 export {self.api_key_env}=...，或用 --base-url 指向兼容 "
                "OpenAI 的端点；想用内置离线模型试用时，不要指定 --model "
                f"(model {self.model} was asked for but no endpoint can serve it: set {self.api_key_env} "
                "or --base-url)"
            )

    def endpoint(self) -> Endpoint:
        """The configured endpoint for the client; the key leaves its SecretStr only here.

        An endpoint off this machine without a key would answer every request 401: say so now, naming
        the variable that was read, rather than after the first request.
        """
        if self.api_key is None and not is_loopback(self.base_url or ""):
            raise ConfigError(
                f"未找到 API 密钥：环境变量 {self.api_key_env} 未设置或为空，而端点 {self.base_url or 'OpenAI API'} "
                f"不在本机。请 export {self.api_key_env}=...（或用 --api-key-env 指定存放密钥的变量）；端点不需要"
                f"密钥时（如内网的 vLLM），设 {self.api_key_env}=EMPTY "
                f"(no API key: {self.api_key_env} is not set, and the endpoint is not this machine)"
            )
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        if self.timeout is None:
            return Endpoint(self.base_url, key, key_env=self.api_key_env, adaptive_timeout=True)
        return Endpoint(self.base_url, key, self.timeout, key_env=self.api_key_env)

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
    origin: dict[str, str] = {}  # where each value came from, for messages
    path = config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is not None:
        table = _config_table(path)
        data.update(table)
        origin.update({key: f"{path} 中的 {key}" for key in table})
    for var, key in (("OPENAI_BASE_URL", "base_url"), ("KEFU_MODEL", "model")):
        if env.get(var) and key not in data:
            data[key] = env[var]
            origin[key] = f"环境变量 {var}"
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    data.update(flags)
    origin.update({key: "--" + key.replace("_", "-") for key in flags})
    key_var = data.get("api_key_env", "OPENAI_API_KEY")
    if isinstance(key_var, str) and env.get(key_var):
        data["api_key"] = env[key_var]
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(e, origin) for e in exc.errors())) from None


def _config_table(path: Path) -> dict[str, Any]:
    """The config file's `[kefu]` table; any other table or key is an error (a misspelt `[kefuu]` would
    otherwise be ignored without a word)."""
    try:
        # utf-8-sig: Windows Notepad starts a UTF-8 file with a byte-order mark, which TOML does not allow.
        document = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConfigError(f"无法读取配置文件 {path}：{os_problem(exc)} (cannot read the config file)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"配置文件 {path} {utf8_problem(exc)}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"配置文件 {path} 不是有效的 TOML：{exc} (not valid TOML)") from None
    unknown = [key for key in document if key != "kefu"]
    if unknown:
        raise ConfigError(f"{path}: 未知的表或键 {', '.join(map(repr, unknown))}：配置只能写在 [kefu] 表里 "
                          f"(unknown table or key: settings go in a [kefu] table)")
    table = document.get("kefu", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: kefu 须为表 [kefu] (kefu must be a table)")
    if "api_key" in table:
        raise ConfigError(f"{path}: put the API key in the environment, not the config file "
                          f"(set api_key_env to the variable's name)")
    return table


def _problem(error: ErrorDetails, origin: dict[str, str]) -> str:
    """One invalid value: where it came from, the value (never a key), and what is allowed."""
    field = str(error["loc"][0]) if error["loc"] else ""
    where = origin.get(field, f"设置 {field}")
    if error["type"] == "extra_forbidden":
        return f"{where}: 未知的设置 (unknown setting)"
    if field == "api_key":
        return f"{where}: {error['msg']}"
    return f"{where} 的值 {error['input']!r} 无效：{_RULES.get(field, error['msg'])}"


_RULES = {
    "base_url": "须为 http:// 或 https:// 开头、带主机名的地址，如 http://127.0.0.1:8000/v1 (must be an http(s) URL)",
    "temperature": "须为 0 到 2 之间的数 (must be a number from 0 to 2)",
    "max_tokens": "须为正整数 (must be a whole number of at least 1)",
    "model": "不能为空 (must name a model)",
    "api_key_env": "须为环境变量名 (must name an environment variable)",
    "timeout": "须为大于 0 的秒数 (must be a number of seconds above 0)",
    "rpm": "须为大于 0 的数 (must be a number above 0)",
    "tpm": "须为大于 0 的数 (must be a number above 0)",
    "concurrency": "须为 1 到 4096 之间的整数 (must be a whole number from 1 to 4096)",
    "context_window": "须为正整数 (must be a whole number of at least 1)",
    "retry_attempts": "须为正整数 (must be a whole number of at least 1)",
    "response_format": "须为 auto、json_schema 或 json_object (must be auto, json_schema or json_object)",
}
"""What each setting allows, for messages; a setting without an entry shows pydantic's message."""
