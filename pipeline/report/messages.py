"""The message catalogue: the words reports and verdicts show people, per language (templates/messages.yaml)."""

from __future__ import annotations

import math
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


def number(value: float | None, digits: int = 2, *, signed: bool = False) -> str:
    """A figure for people: fixed decimals, "—" when missing, and never −0.00 (a value that rounds to
    zero prints as 0.00); `signed` adds + to positive values."""
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.{digits}f}"
    if float(text) == 0:
        return text.lstrip("-")
    return "+" + text if signed and value > 0 else text
