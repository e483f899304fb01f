"""The message catalogue: the words reports and verdicts show people, per language (templates/messages.yaml)."""

from __future__ import annotations

import math
from functools import cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipeline.agreement.reasons import reason_key
from pipeline.models.strict import StrictModel
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


def reason_text(text: str, lang: Lang = "zh") -> str:
    """A statistic's recorded reason (pipeline/agreement/reasons.py) as message why.<id> in `lang`; a sentence
    of no known template (an older agreement.json) as it was written."""
    found = reason_key(text)
    return text if found is None else message(f"why.{found[0]}", lang, **found[1])


def number(value: float | None, digits: int = 2, *, signed: bool = False) -> str:
    """A figure for people: fixed decimals, "—" when missing, and never −0.00 (a value that rounds to
    zero prints as 0.00); `signed` adds + to positive values."""
    if value is None or math.isnan(value):
        return "—"
    text = f"{value:.{digits}f}"
    if float(text) == 0:
        return text.lstrip("-")
    return "+" + text if signed and value > 0 else text


class Message(StrictModel):
    """A message id with its figures: words for people kept as data, rendered in any language later."""

    key: str = Field(description="Message id in templates/messages.yaml, e.g. 'reason.at_ceiling'.")
    fields: dict[str, str] = Field(description="The figures the message quotes, formatted.")

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """A plain string (agreement.json of an earlier version) is kept as it was written."""
        return {"key": "note.text", "fields": {"text": value}} if isinstance(value, str) else value

    def text(self, lang: Lang = "zh") -> str:
        """The message in `lang`."""
        return message(self.key, lang, **self.fields)


def note(key: str, **fields: object) -> Message:
    """A message with its figures turned to text."""
    return Message(key=key, fields={k: str(v) for k, v in fields.items()})
