"""Settings no endpoint would take stop every command at once: exit 2, one line naming the value, nothing sent."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from pipeline.cli.main import app
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]
LABELS = REPO / "eval_sets" / "ecommerce_cs_labels.csv"
CLEAN_ENV: dict[str, str | None] = {"OPENAI_API_KEY": None, "OPENAI_BASE_URL": None, "KEFU_MODEL": None}
UNROUTABLE = "http://192.0.2.1:9/v1"  # TEST-NET-1: not this machine, and nothing there answers


@pytest.fixture(scope="module")
def server() -> Iterator[MockServer]:
    with MockServer() as server:
        yield server


@pytest.fixture
def chats(tmp_path: Path) -> Path:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    chat = Transcript(id="c1", turns=[Turn(role=Role.customer, text="在吗", time=t0),
                                      Turn(role=Role.agent, text="亲，您好", time=t0)])
    path = tmp_path / "chats.jsonl"
    path.write_text(chat.model_dump_json() + "\n", encoding="utf-8")
    return path


def run(*args: str | Path, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args], env=CLEAN_ENV | (env or {}))


def refused_at_once(result: Result, server: MockServer, *named: str) -> None:
    """Exit 2 with one line that names each of `named`, and no request reached the endpoint."""
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert all(n in result.output for n in named), result.output
    assert "Traceback" not in result.output and server.requests == []


BAD_FLAGS = [
    (("--temperature", "nan"), "--temperature 的值 nan 无效"),
    (("--temperature", "-5"), "--temperature 的值 -5.0 无效"),
    (("--max-tokens", "0"), "--max-tokens 的值 0 无效"),
    (("--max-tokens", "-1"), "--max-tokens 的值 -1 无效"),
    (("--model", ""), "--model 的值 '' 无效"),
    (("--base-url", "not a url"), "--base-url 的值 'not a url' 无效"),
    (("--base-url", "ftp://files.example/v1"), "--base-url 的值 'ftp://files.example/v1' 无效"),
]


@pytest.mark.parametrize(("flags", "named"), BAD_FLAGS)
@pytest.mark.parametrize("command", ["grade", "check", "batch write"])
def test_a_bad_setting_stops_the_command_before_any_request(command: str, flags: tuple[str, str], named: str,
                                                            server: MockServer, chats: Path, tmp_path: Path) -> None:
    server.reset()
    args: list[str | Path] = [*command.split(), chats, "--out", tmp_path / "out"]
    if command == "check":
        args += ["--labels", LABELS]
    if "--base-url" not in flags:
        args += ["--base-url", server.base_url]
    result = run(*args, *flags, env={"OPENAI_API_KEY": "sk-test"})
    refused_at_once(result, server, named)
    assert not (tmp_path / "out" / "batch").exists()


@pytest.mark.parametrize("value", ["2", "nan", "0.4", "trustworthy"])
def test_a_fail_under_that_is_not_a_verdict_is_refused(value: str, server: MockServer, chats: Path,
                                                       tmp_path: Path) -> None:
    # --fail-under names a verdict (trusted | review); a number, nan or a typo fails before any request.
    server.reset()
    result = run("check", chats, "--labels", LABELS, "--out", tmp_path / "out", "--fail-under", value,
                 "--base-url", server.base_url)
    assert result.exit_code == 2 and value in result.output and "trusted" in result.output, result.output
    assert server.requests == []


@pytest.mark.parametrize(("toml", "named"), [
    ("[kefuu]\nmodel = 'x'\n", "'kefuu'"),
    ("[kefu]\ntemperature = nan\n", "kefu.toml 中的 temperature 的值 nan 无效"),
])
def test_demo_checks_the_config_file_before_any_request(toml: str, named: str, server: MockServer, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    server.reset()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "kefu.toml").write_text(toml, encoding="utf-8")
    result = run("demo", "--out", tmp_path / "demo", env={"OPENAI_BASE_URL": server.base_url})
    refused_at_once(result, server, named)


@pytest.mark.parametrize("command", ["grade", "check", "batch submit"])
def test_an_endpoint_off_this_machine_without_a_key_is_refused_before_any_request(
        command: str, server: MockServer, chats: Path, tmp_path: Path) -> None:
    server.reset()
    out = tmp_path / "out"
    if command == "batch submit":
        assert run("batch", "write", chats, "--out", out, "--no-redact").exit_code == 0
        args: list[str | Path] = ["batch", "submit", out]
    else:
        args = [command, chats, "--out", out, *(["--labels", LABELS] if command == "check" else [])]
    result = run(*args, "--base-url", UNROUTABLE, "--api-key-env", "KEFU_TEST_KEY",
                 env={"KEFU_TEST_KEY": None})
    refused_at_once(result, server, "KEFU_TEST_KEY 未设置或为空", "KEFU_TEST_KEY=EMPTY")


def test_the_request_timeout_and_the_config_table_are_shown_in_help() -> None:
    for command in ("grade", "check"):
        text = run(command, "--help", env={"COLUMNS": "400"}).output
        assert "Request timeout, seconds. Default: adapts to the endpoint" in text and "120 s until 10 replies" in text
        assert "with a [kefu] table" in text, text


def test_good_settings_still_grade(server: MockServer, chats: Path, tmp_path: Path) -> None:
    server.reset()
    result = run("grade", chats, "--out", tmp_path / "out", "--model", "mock-model", "--temperature", "2",
                 "--max-tokens", "1", "--base-url", server.base_url, env={"OPENAI_API_KEY": "sk-test"})
    assert result.exit_code == 0, result.output
    [request] = server.requests
    assert request.body is not None and (request.body["temperature"], request.body["max_tokens"]) == (2.0, 1)
    assert json.loads(json.dumps(request.body))["model"] == "mock-model"
