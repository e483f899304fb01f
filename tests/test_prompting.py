"""Every rubric renders through every template; transcript text stays data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.prompting import PromptSet, transcript_boundary
from pipeline.rubric import load_rubric
from pipeline.transcripts import Transcript

REPO = Path(__file__).resolve().parent.parent
RUBRICS = sorted(p for p in (REPO / "rubric").glob("*.yaml") if "dimensions" in yaml.safe_load(p.read_text("utf-8")))
CHATS = [Transcript.model_validate(json.loads(line))
         for line in (REPO / "eval_sets" / "ecommerce_cs.jsonl").read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("path", RUBRICS, ids=lambda p: p.name)
def test_every_rubric_renders_every_template(path: Path) -> None:
    rubric = load_rubric(path)
    prompts = PromptSet(rubric.language)
    system = prompts.system(rubric, rubric.criteria())
    for c in rubric.criteria():
        assert f"### {c.id}：{c.name}（满分 {c.max} 分" in system
    for chat in CHATS:
        user = prompts.user(chat)
        assert user.count(f"<<<TRANSCRIPT {transcript_boundary(chat)}>>>") == 1
        assert f"[{len(chat.turns)}] " in user
    assert "JSON" in prompts.reask("score: Input should be 0, 1 or 3", [c.id for c in rubric.criteria()])


def test_template_syntax_in_a_chat_stays_literal() -> None:
    braces = next(c for c in CHATS if "{{" in "".join(t.text for t in c.turns))
    user = PromptSet("zh").user(braces)
    for turn in braces.turns:
        if "{{" in turn.text:
            assert turn.text.split("\n")[0] in user


def test_script_tags_are_left_as_text_in_prompts() -> None:
    chat = next(c for c in CHATS if "<script>" in "".join(t.text for t in c.turns))
    assert "<script>alert(1)</script>" in PromptSet("zh").user(chat)


def test_missing_language_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no prompt templates for language 'fr'"):
        PromptSet("fr")


def test_template_hash_follows_template_content(tmp_path: Path) -> None:
    src = REPO / "prompts" / "zh"
    copy = tmp_path / "zh"
    copy.mkdir()
    for f in src.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    same = PromptSet("zh", tmp_path).template_hash
    assert same == PromptSet("zh").template_hash
    (copy / "system.j2").write_text((src / "system.j2").read_text("utf-8") + "\n补充。", encoding="utf-8")
    assert PromptSet("zh", tmp_path).template_hash != same


def test_undefined_variables_fail_loudly(tmp_path: Path) -> None:
    copy = tmp_path / "zh"
    copy.mkdir()
    for f in (REPO / "prompts" / "zh").iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "reask.j2").write_text("{{ no_such_variable }}", encoding="utf-8")
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        PromptSet("zh", tmp_path).reask("x", ["greeting"])
