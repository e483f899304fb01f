"""Commands that do what they say (issue 15): an asked-for model is never quietly replaced."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from pipeline.checks.lexicons import is_lexicon_file, load_lexicons
from pipeline.cli.main import app
from pipeline.grading.dryrun import prompt_file_name
from pipeline.llm.local import model as local_model
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.oserrors import os_problem

REPO = Path(__file__).resolve().parents[2]


def write_chats(path: Path, n: int) -> Path:
    chats = [Transcript(id=f"c{i}", turns=[Turn(role=Role.customer, text="在吗"), Turn(role=Role.agent, text="您好")])
             for i in range(n)]
    path.write_text("".join(c.model_dump_json(exclude_none=True) + "\n" for c in chats), encoding="utf-8")
    return path


@pytest.fixture
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """No key, no base URL, and an offline model that must not be started."""
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "KEFU_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(Path(__file__).resolve().parent)  # no kefu.toml here

    def started() -> Path:
        raise AssertionError("the offline model was started")

    monkeypatch.setattr(local_model, "local_extra_available", lambda *a: True)
    monkeypatch.setattr(local_model, "prepare_model", started)


@pytest.mark.usefixtures("no_endpoint")
@pytest.mark.parametrize("how", [["--model", "gpt-4o-mini"], ["--config", "MODEL_TOML"]])
def test_an_asked_for_model_without_an_endpoint_is_an_error(tmp_path: Path, how: list[str]) -> None:
    if how[1] == "MODEL_TOML":
        (tmp_path / "k.toml").write_text('[kefu]\nmodel = "gpt-4o-mini"\n', encoding="utf-8")
        how = ["--config", str(tmp_path / "k.toml")]
    src = write_chats(tmp_path / "chats.jsonl", 2)
    result = CliRunner().invoke(app, ["grade", str(src), "--out", str(tmp_path / "o"), *how])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "gpt-4o-mini" in text and "OPENAI_API_KEY" in text and "--base-url" in text
    assert not (tmp_path / "o" / "kefu.sqlite").exists()


def test_dry_run_writes_its_rejects_and_the_prompts_the_model_would_see(tmp_path: Path) -> None:
    src = write_chats(tmp_path / "chats.jsonl", 7)
    with src.open("a", encoding="utf-8") as f:
        f.write("{not json\n")
        f.write('{"id": "x", "turns": []}\n')
    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["grade", str(src), "--out", str(out), "--dry-run", "--model", "gpt-4o-mini"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "7（拒收 2）" in text and "gpt-4o-mini" in text and "2025-06-01" in text
    rejects = [json.loads(line) for line in (out / "dry_run/rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["line"] for r in rejects] == [8, 9] and all(r["reason"] for r in rejects)
    assert f"{src}:8" in text  # which, and why, on the console too
    written = sorted((out / "dry_run/prompts").iterdir())
    assert [p.name for p in written] == [f"0000{i}_c{i - 1}.txt" for i in range(1, 6)]
    first = written[0].read_text(encoding="utf-8")
    assert "all · system" in first and "all · user" in first and "您好" in first
    assert not (out / "kefu.sqlite").exists()
    again = CliRunner().invoke(app, ["grade", str(src), "--out", str(out), "--dry-run", "--all-prompts"])
    assert again.exit_code == 0, again.output
    assert len(list((out / "dry_run/prompts").iterdir())) == 7


@given(st.text(max_size=80), st.integers(min_value=1, max_value=99999))
def test_a_prompt_file_name_is_one_plain_file_whatever_the_id(transcript_id: str, index: int) -> None:
    name = prompt_file_name(index, transcript_id)
    assert "/" not in name and "\\" not in name and not name.startswith(".") and name.endswith(".txt")
    assert name.startswith(f"{index:05d}_") and len(name) <= 70


def test_rubric_check_of_the_rubric_folder_validates_the_lexicons_as_lexicons(tmp_path: Path) -> None:
    every = sorted(str(p) for p in (REPO / "rubric").glob("*.yaml"))
    result = CliRunner().invoke(app, ["rubric", "check", *every])
    assert result.exit_code == 0, result.output
    version = load_lexicons(REPO / "rubric" / "lexicons.yaml").version
    assert f"lexicons.yaml: 词库 lexicons v{version}" in result.output
    assert "ecommerce_cs.yaml: 电商客服评分" in result.output
    broken = tmp_path / "lexicons.yaml"
    text = (REPO / "rubric/lexicons.yaml").read_text(encoding="utf-8")
    broken.write_text(re.sub(r'(?m)^version: .*$', 'version: ""', text), encoding="utf-8")
    result = CliRunner().invoke(app, ["rubric", "check", str(broken)])
    assert result.exit_code == 1 and "version" in result.output  # checked as lexicons, not "dimensions missing"
    assert "dimensions" not in result.output


def test_an_ids_list_saved_with_a_bom_keeps_its_first_id_and_a_gbk_one_is_refused_in_words(
    tmp_path: Path, no_endpoint: None
) -> None:
    src = write_chats(tmp_path / "chats.jsonl", 3)
    ids = tmp_path / "ids.txt"
    ids.write_bytes("\ufeffc0\r\nc2\r\n".encode())  # Notepad's and Excel's UTF-8
    result = CliRunner().invoke(app, ["grade", str(src), "--out", str(tmp_path / "run"), "--ids", str(ids),
                                      "--dry-run"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "run" / "dry_run" / "prompts").iterdir()) == ["00001_c0.txt",
                                                                                           "00002_c2.txt"]
    ids.write_bytes("c0\n店铺一\n".encode("gbk"))
    result = CliRunner().invoke(app, ["grade", str(src), "--out", str(tmp_path / "run2"), "--ids", str(ids),
                                      "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in text
    assert text.startswith(f"错误 (error)：无法读取 id 列表 {ids}：不是 UTF-8 文本：第 4 个字节无法解码"), text


@given(st.binary(max_size=200))
def test_any_file_is_either_kind_without_an_error(tmp_path_factory: pytest.TempPathFactory, content: bytes) -> None:
    path = tmp_path_factory.mktemp("y") / "x.yaml"
    path.write_bytes(content)
    assert is_lexicon_file(path) in (True, False)


@given(st.dictionaries(st.sampled_from(["emoticons", "groups", "dimensions", "id", "version"]), st.none()))
def test_a_mapping_with_dimensions_is_a_rubric(tmp_path_factory: pytest.TempPathFactory,
                                               data: dict[str, None]) -> None:
    path = tmp_path_factory.mktemp("y") / "x.yaml"
    path.write_text(json.dumps(data), encoding="utf-8")
    assert is_lexicon_file(path) == ("dimensions" not in data and bool({"emoticons", "groups"} & set(data)))


@pytest.mark.parametrize("mistake", ["input", "rubric", "out", "config", "ids"])
def test_a_path_mistake_says_in_chinese_first_what_was_looked_for_and_where(tmp_path: Path, mistake: str) -> None:
    src = write_chats(tmp_path / "chats.jsonl", 1)
    taken = tmp_path / "a-file"
    taken.write_text("", encoding="utf-8")
    missing = tmp_path / "missing"
    args = {"input": [str(missing)], "rubric": [str(src), "--rubric", str(missing)],
            "out": [str(src), "--out", str(taken / "run")], "config": [str(src), "--config", str(missing)],
            "ids": [str(src), "--ids", str(missing)]}[mistake]
    result = CliRunner().invoke(app, ["grade", *args, "--dry-run"])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert text.startswith(("错误 (error)：", "评分表或词库有误")) and "Errno" not in text and "Traceback" not in text
    assert str(missing if mistake != "out" else taken / "run") in text
    assert ("不存在" in text or "找不到" in text) if mistake != "out" else "路径中有一段不是文件夹" in text


@given(st.integers(min_value=0, max_value=200), st.text(max_size=20))
def test_an_os_error_reads_without_python_text(code: int, path: str) -> None:
    words = os_problem(OSError(code, os.strerror(code), path))
    assert words and "Errno" not in words and "[" not in words and "'" not in words


SERVE_MOCK = """
import sys, threading
from pipeline.testing.mockserver import MockServer
with MockServer(port=int(sys.argv[sys.argv.index("--port") + 1])):
    threading.Event().wait()
"""
"""A stand-in for llama-server: the mock endpoint on the port LocalServer gives it (it takes the same flags)."""


class OfflineModel:
    """The embedded model's path with a stand-in server: the real LocalServer start, health wait and stop."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.logs = tmp_path / "cache" / "logs"
        model = tmp_path / "model.gguf"
        model.write_bytes(b"GGUF stand-in")
        for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "KEFU_MODEL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("KEFU_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.chdir(Path(__file__).resolve().parent)  # no kefu.toml here
        monkeypatch.setattr(local_model, "local_extra_available", lambda *a: True)
        monkeypatch.setattr(local_model, "prepare_model", lambda: model)

    def serves(self) -> None:
        """Starting the server starts the mock endpoint."""
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        runtime = local_model.ServerRuntime((sys.executable, "-c", SERVE_MOCK), env)
        self._monkeypatch.setattr(local_model, "server_runtime", lambda: runtime)

    def fails_to_start(self) -> None:
        """Starting the server fails loudly: it exits with code 3 before it is ready."""
        runtime = local_model.ServerRuntime((sys.executable, "-c", "raise SystemExit(3)"), dict(os.environ))
        self._monkeypatch.setattr(local_model, "server_runtime", lambda: runtime)

    def starts(self) -> int:
        """How many times a server was launched (LocalServer logs each command line)."""
        return sum(line.startswith("# ") for log in self.logs.glob("*.log")
                   for line in log.read_text(encoding="utf-8").splitlines())


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OfflineModel:
    return OfflineModel(tmp_path, monkeypatch)


CONTRACT_FILES = ("scores.csv", "grades.jsonl", "checks.jsonl")


@pytest.mark.parametrize("command", ["demo", "grade"])
def test_a_rerun_with_nothing_left_to_grade_does_not_start_the_offline_model(
        offline: OfflineModel, tmp_path: Path, command: str) -> None:
    out = tmp_path / "o"
    args = ["demo", "--out", str(out)] if command == "demo" else [
        "grade", str(write_chats(tmp_path / "chats.jsonl", 3)), "--out", str(out)]
    offline.serves()
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert offline.starts() == 1
    written = {name: (out / name).read_bytes() for name in CONTRACT_FILES}
    for name in CONTRACT_FILES:
        (out / name).unlink()
    offline.fails_to_start()
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    assert offline.starts() == 1
    assert {name: (out / name).read_bytes() for name in CONTRACT_FILES} == written  # rewritten, the same
    if command == "demo":
        assert (out / "report.html").is_file()


def test_a_run_with_work_starts_the_offline_model(offline: OfflineModel, tmp_path: Path) -> None:
    src = write_chats(tmp_path / "chats.jsonl", 2)
    offline.fails_to_start()
    result = CliRunner().invoke(app, ["grade", str(src), "--out", str(tmp_path / "o")])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "llama-server exited with code 3 before it was ready" in text
    assert offline.starts() == 1
