"""Commands that do what they say (issue 15): an asked-for model is never quietly replaced."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import local_model
from pipeline.cli import app
from pipeline.transcripts import Role, Transcript, Turn


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
