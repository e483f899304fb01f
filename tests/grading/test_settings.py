"""Settings precedence and key handling: keys come from the environment only and are never exported."""

from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import ConfigError
from pipeline.grading.settings import Settings, load_settings
from pipeline.llm.client import chat_request_params


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
    with pytest.raises(ConfigError, match="--response-format"):
        load_settings(None, {"response_format": "xml"}, environ={})


def test_no_endpoint_means_local(tmp_path: Path) -> None:
    assert not load_settings(None, environ={}).endpoint_configured


# ---- every value is checked on load, and the message names where it came from ---------------------------


@pytest.mark.parametrize(("flags", "named"), [
    ({"temperature": float("nan")}, "--temperature 的值 nan 无效"),
    ({"temperature": -5.0}, "--temperature 的值 -5.0 无效"),
    ({"temperature": float("inf")}, "--temperature 的值 inf 无效"),
    ({"temperature": 2.5}, "--temperature 的值 2.5 无效"),
    ({"max_tokens": 0}, "--max-tokens 的值 0 无效"),
    ({"max_tokens": -1}, "--max-tokens 的值 -1 无效"),
    ({"model": ""}, "--model 的值 '' 无效"),
    ({"model": "  "}, "--model 的值 '  ' 无效"),
    ({"api_key_env": ""}, "--api-key-env 的值 '' 无效：须为环境变量名"),
    ({"base_url": "not a url"}, "--base-url 的值 'not a url' 无效"),
    ({"base_url": "ftp://files.example/v1"}, "--base-url 的值 'ftp://files.example/v1' 无效"),
    ({"base_url": "localhost:8000/v1"}, "--base-url 的值 'localhost:8000/v1' 无效"),
    ({"base_url": "http:///v1"}, "--base-url 的值 'http:///v1' 无效"),
    ({"base_url": "http://127.0.0.1:99999/v1"}, "--base-url 的值 'http://127.0.0.1:99999/v1' 无效"),
    ({"base_url": "http://127.0.0.1:0/v1"}, "--base-url 的值 'http://127.0.0.1:0/v1' 无效"),
    ({"base_url": "http://h:abc/v1"}, "--base-url 的值 'http://h:abc/v1' 无效"),
    ({"base_url": "http://a☃b/v1"}, "--base-url 的值 'http://a☃b/v1' 无效"),
    ({"base_url": "http://主机\u3000/v1"}, "--base-url 的值 'http://主机\\u3000/v1' 无效"),
    ({"timeout": float("nan")}, "--timeout 的值 nan 无效"),
    ({"timeout": 0.0}, "--timeout 的值 0.0 无效"),
    ({"rpm": float("nan")}, "--rpm 的值 nan 无效"),
    ({"tpm": float("inf")}, "--tpm 的值 inf 无效"),
])
def test_a_value_no_endpoint_takes_is_refused_on_load(flags: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, flags, environ={})
    assert str(info.value).startswith(named) and "\n" not in str(info.value)


def test_the_edges_of_each_range_are_accepted() -> None:
    s = load_settings(None, {"temperature": 2.0, "max_tokens": 1, "base_url": "https://api.deepseek.com/v1"},
                      environ={})
    assert (s.temperature, s.max_tokens) == (2.0, 1)
    assert load_settings(None, {"temperature": 0.0}, environ={}).temperature == 0.0


def test_a_bad_value_from_the_config_or_the_environment_names_its_source(tmp_path: Path) -> None:
    cfg = tmp_path / "kefu.toml"
    cfg.write_text("[kefu]\ntemperature = nan\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"kefu\.toml 中的 temperature 的值 nan 无效"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="环境变量 OPENAI_BASE_URL 的值 'ftp://x/v1' 无效"):
        load_settings(None, environ={"OPENAI_BASE_URL": "ftp://x/v1"})
    with pytest.raises(ConfigError, match="环境变量 KEFU_MODEL 的值 ' ' 无效"):
        load_settings(None, environ={"KEFU_MODEL": " "})


@pytest.mark.parametrize("text", [
    '[kefuu]\nmodel = "m"\n',  # a misspelt table would be ignored without a word
    '[kefu]\nmodel = "m"\n[other]\nx = 1\n',
    'model = "m"\n',  # a setting outside the table
])
def test_anything_outside_the_kefu_table_is_an_error(tmp_path: Path, text: str) -> None:
    cfg = tmp_path / "kefu.toml"
    cfg.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="未知的表或键"):
        load_settings(cfg, environ={})


def test_an_unknown_key_and_a_kefu_value_that_is_no_table_are_errors(tmp_path: Path) -> None:
    cfg = tmp_path / "kefu.toml"
    cfg.write_text("[kefu]\nmodle = 'm'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"kefu\.toml 中的 modle: 未知的设置"):
        load_settings(cfg, environ={})
    cfg.write_text("kefu = 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="须为表"):
        load_settings(cfg, environ={})


@pytest.mark.parametrize("key", ["temperature", "seed", "max_tokens", "timeout", "concurrency", "rpm", "tpm",
                                 "context_window", "retry_attempts"])
def test_true_or_false_for_a_number_is_refused(tmp_path: Path, key: str) -> None:
    """pydantic took `true` as 1: `max_tokens = true` cut every reply after one token."""
    cfg = tmp_path / "kefu.toml"
    cfg.write_text(f"[kefu]\n{key} = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"kefu\.toml 中的 {key} 的值 True 无效"):
        load_settings(cfg, environ={})


def test_a_config_saved_by_notepad_loads_and_one_in_gbk_is_refused_in_words(tmp_path: Path) -> None:
    cfg = tmp_path / "kefu.toml"
    cfg.write_bytes('\ufeff[kefu]\nmodel = "qwen-本地"\n'.encode())  # Notepad's UTF-8 starts with a BOM
    assert load_settings(cfg, environ={}).model == "qwen-本地"
    cfg.write_bytes('[kefu]\nmodel = "qwen-本地"\n'.encode("gbk"))
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert str(info.value) == (f"配置文件 {cfg} 不是 UTF-8 文本：第 22 个字节无法解码，请另存为 UTF-8 "
                               "(not UTF-8 text: byte 22 cannot be decoded; save it as UTF-8)")


# ---- an endpoint off this machine needs a key before anything is sent -----------------------------------


@pytest.mark.parametrize(("base_url", "key_env"), [
    ("https://api.deepseek.com/v1", None),
    ("http://10.0.0.5:8000/v1", "VLLM_API_KEY"),  # another machine on the LAN is another machine
    (None, None),  # OpenAI's own API
])
def test_no_key_for_an_endpoint_off_this_machine_names_the_variable(base_url: str | None,
                                                                   key_env: str | None) -> None:
    s = load_settings(None, {"base_url": base_url, "api_key_env": key_env}, environ={"OPENAI_API_KEY": ""})
    with pytest.raises(ConfigError, match=f"环境变量 {key_env or 'OPENAI_API_KEY'} 未设置或为空"):
        s.endpoint()


def test_a_local_endpoint_or_a_key_is_enough() -> None:
    local = load_settings(None, {"base_url": "http://127.0.0.1:8000/v1"}, environ={})
    assert local.endpoint().api_key is None
    remote = load_settings(None, {"base_url": "https://api.deepseek.com/v1", "api_key_env": "DEEPSEEK_API_KEY"},
                           environ={"DEEPSEEK_API_KEY": "EMPTY"})
    assert remote.endpoint().key_env == "DEEPSEEK_API_KEY"


# ---- properties: whatever a flag, a variable or a config file holds -------------------------------------


@settings(max_examples=200, deadline=None)
@given(temperature=st.floats(), max_tokens=st.integers(), model=st.text(), base_url=st.text())
def test_settings_are_refused_with_a_message_or_can_be_sent(temperature: float, max_tokens: int, model: str,
                                                           base_url: str) -> None:
    try:
        s = load_settings(None, {"temperature": temperature, "max_tokens": max_tokens, "model": model,
                                 "base_url": base_url}, environ={})
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    params = chat_request_params([], model=s.model, temperature=s.temperature, seed=s.seed, max_tokens=s.max_tokens)
    json.dumps(params, allow_nan=False)  # what the client sends: no nan, no inf
    assert s.model.strip() and s.max_tokens is not None and s.max_tokens >= 1
    assert s.temperature is not None and 0 <= s.temperature <= 2
    assert s.base_url is not None and s.base_url.startswith(("http://", "https://"))


TOML_VALUES = st.one_of(
    st.integers().map(str), st.floats(allow_nan=False, allow_infinity=False).map(repr), st.text().map(json.dumps),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "true", "[]", "{}", '""', '"http://127.0.0.1:1/v1"']),
)
TOML_LINES = st.tuples(st.sampled_from([*Settings.model_fields, "modle"]), TOML_VALUES).map(" = ".join)
CONFIGS = st.one_of(
    st.text(),
    st.builds(lambda table, lines: f"[{table}]\n" + "\n".join(lines) + "\n",
              st.sampled_from(["kefu", "kefu", "kefuu", "Kefu"]), st.lists(TOML_LINES, max_size=4)),
)


@settings(max_examples=200, deadline=None)
@given(text=CONFIGS)
def test_any_config_file_loads_or_is_refused_with_a_message(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "kefu.toml"
        cfg.write_text(text, encoding="utf-8")
        try:
            s = load_settings(cfg, environ={})
        except ConfigError:
            return
        read = cfg.read_text(encoding="utf-8-sig")  # as the loader reads it: a lone "\r" is a line break
    assert set(tomllib.loads(read)) <= {"kefu"}  # a file that loads has no other table or key
    json.dumps(s.public(), allow_nan=False)  # what the run record stores
