"""Settings precedence and key handling: keys come from the environment only and are never exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import load_settings


def test_precedence_defaults_env_file_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "kefu.toml"
    cfg.write_text('[kefu]\nmodel = "from-file"\nconcurrency = 7\n', encoding="utf-8")
    env = {"OPENAI_BASE_URL": "http://env:1/v1", "KEFU_MODEL": "from-env", "OPENAI_API_KEY": "sk-env"}
    s = load_settings(cfg, {"concurrency": 9, "temperature": None}, environ=env)
    assert s.base_url == "http://env:1/v1"  # env, not overridden by the file
    assert s.model == "from-file"  # file beats env
    assert s.concurrency == 9  # flag beats file
    assert s.temperature == 0.0  # a None flag leaves the default
    assert s.api_key is not None and s.api_key.get_secret_value() == "sk-env"


def test_key_from_named_variable_and_never_in_public(tmp_path: Path) -> None:
    s = load_settings(None, {"api_key_env": "DEEPSEEK_API_KEY"}, environ={"DEEPSEEK_API_KEY": "sk-deep-123"})
    assert s.endpoint_configured
    assert "sk-deep-123" not in str(s.public()) and s.public()["api_key_set"] is True
    assert "sk-deep-123" not in repr(s)


def test_key_in_a_config_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "kefu.toml"
    cfg.write_text('[kefu]\napi_key = "sk-oops"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="environment"):
        load_settings(cfg, environ={})


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="concurrency"):
        load_settings(None, {"concurrency": 0}, environ={})
    with pytest.raises(ConfigError, match="response_format"):
        load_settings(None, {"response_format": "xml"}, environ={})


def test_no_endpoint_means_local(tmp_path: Path) -> None:
    assert not load_settings(None, environ={}).endpoint_configured
