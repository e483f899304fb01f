"""Every `kefu … --help` renders its help texts whole: brackets kept, no type tags, defaults shown."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import typer
import typer.rich_utils
from typer.testing import CliRunner

from pipeline.cli.main import app

TYPE_TAG = re.compile(r"<(?:int|float|str|bool|path|list\[|[a-z ]*range)[^>]*>|\[x[<>]=?\d+")
BRACKETED = re.compile(r"\\?\[([^\[\]\s]+)\]")


def commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, group
    for name, sub in getattr(group, "commands", {}).items():
        yield from commands(sub, (*path, name))


def bracketed(command: Any) -> set[str]:
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    return {f"[{m}]" for text in texts for m in BRACKETED.findall(text)}


ALL = list(commands(typer.main.get_command(app)))


def test_every_command_is_walked() -> None:
    names = {" ".join(path) for path, _ in ALL}
    assert {"grade", "check", "report", "demo", "rubric check", "batch submit"} <= names
    assert any(bracketed(c) for _, c in ALL)  # the [kefu] of --config at least


@pytest.mark.parametrize("path, command", ALL, ids=[" ".join(p) or "kefu" for p, _ in ALL])
def test_help_keeps_every_bracket_and_shows_no_type_tag(monkeypatch: pytest.MonkeyPatch, path: tuple[str, ...],
                                                        command: Any) -> None:
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)  # one help text, one line: nothing split to search
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    text = result.output
    for token in bracketed(command):
        assert token in text, f"{' '.join(path)}: {token} was eaten by the console's markup"
    assert not TYPE_TAG.search(text), TYPE_TAG.search(text)


def test_grade_help_shows_the_defaults_the_settings_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(typer.rich_utils, "MAX_WIDTH", 400)
    text = CliRunner().invoke(app, ["grade", "--help"]).output
    line = {name: next(x for x in text.splitlines() if f"{name} " in x) for name in
            ("--model", "--concurrency", "--temperature", "--max-tokens")}
    assert "[default: (gpt-4o-mini)]" in line["--model"] and "[default: (16)]" in line["--concurrency"]
    assert "[default: (0.0)]" in line["--temperature"] and "[default: (4096)]" in line["--max-tokens"]


def test_ranges_are_still_enforced_without_being_shown(tmp_path: Any) -> None:
    result = CliRunner().invoke(app, ["grade", str(tmp_path), "--concurrency", "0", "--dry-run"])
    assert result.exit_code == 2 and "--concurrency" in result.output
