"""The message catalogue: the words reports and verdicts show people, per language (templates/messages.yaml)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

from pipeline.yamlload import load_yaml

Lang = Literal["zh", "en"]
CATALOGUE = Path(__file__).resolve().parent / "templates" / "messages.yaml"


@cache
def catalogue() -> dict[str, dict[str, str]]:
    """Language → message id → text, read once."""
    data: dict[str, dict[str, str]] = load_yaml(CATALOGUE.read_text(encoding="utf-8"), unique_keys=True)
    return data


def message(key: str, lang: Lang = "zh", **fields: object) -> str:
    """The message `key` in `lang` with its {fields} filled in; KeyError names a missing message."""
    return catalogue()[lang][key].format(**fields)
