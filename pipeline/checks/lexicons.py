"""Phrase lexicons: the YAML models of rubric/lexicons.yaml, validated as they load.

The lexicons are data; the models check what can be checked before any reply is matched (a regex
compiles, an exception contains its pattern, every group is present), comparing phrases as the
matcher will see them (`checks.normalization`). Matching them against replies is `checks.phrases`.
"""

from __future__ import annotations

import re
from collections import Counter
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from pipeline.checks.normalization import normalize
from pipeline.errors import RubricError
from pipeline.models.strict import StrictModel
from pipeline.yamlload import load_yaml, read_yaml_source

_Phrase = Annotated[str, Field(min_length=1)]


class MatchKind(StrEnum):
    """How an entry's pattern is compared with a reply."""

    substring = "substring"
    whole = "whole"
    regex = "regex"


class PhraseGroup(StrEnum):
    """The lexicon groups; `honorifics`, `greetings` and `closings` are things the agent should say."""

    banned = "banned"
    negation_refusal = "negation_refusal"
    negative_language = "negative_language"
    but_words = "but_words"
    honorifics = "honorifics"
    greetings = "greetings"
    closings = "closings"


class LexiconEntry(StrictModel):
    """One phrase to look for."""

    pattern: str = Field(min_length=1, description="The phrase, or a regular expression for `match: regex`.")
    match: MatchKind = Field(default=MatchKind.substring, description="How the pattern is compared with a reply.")
    source: str = Field(min_length=1, description="The seed file and section the phrase comes from.")
    suggestion: str | None = Field(default=None, description="What the agent should write instead.")
    exceptions: list[_Phrase] = Field(
        default_factory=list,
        description="Longer allowed words containing the pattern; a match inside one is no hit.",
    )
    note: str | None = Field(default=None, description="Why the entry or its exceptions are as they are.")

    @model_validator(mode="after")
    def _check_pattern(self) -> LexiconEntry:
        if self.match is MatchKind.regex:
            try:
                compiled = re.compile(normalize(self.pattern))
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
            useless = [e for e in self.exceptions if not compiled.search(normalize(e))]
        elif self.match is MatchKind.whole:
            if self.exceptions:
                raise ValueError(f"pattern {self.pattern!r}: a whole-reply entry cannot have exceptions")
            useless = []
        else:
            useless = [e for e in self.exceptions if normalize(self.pattern) not in normalize(e)]
        if useless:
            raise ValueError(f"pattern {self.pattern!r}: exceptions {useless} do not contain it, so never apply")
        return self


class LexiconGroup(StrictModel):
    """A group of entries with the exceptions they share."""

    description: str = Field(min_length=1, description="What the group checks and on which seed rule.")
    exceptions: list[_Phrase] = Field(
        default_factory=list,
        description="Allowed longer words applying to every entry of the group they contain.",
    )
    entries: list[LexiconEntry] = Field(min_length=1, description="The phrases.")

    @model_validator(mode="after")
    def _check_entries(self) -> LexiconGroup:
        counts = Counter(normalize(e.pattern) for e in self.entries)
        duplicates = sorted(p for p, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"patterns listed twice: {duplicates}")
        literal = [normalize(e.pattern) for e in self.entries if e.match is MatchKind.substring]
        useless = [e for e in self.exceptions if not any(p in normalize(e) for p in literal)]
        if useless:
            raise ValueError(f"group exceptions {useless} contain none of the group's substring patterns")
        return self


class EmoticonPattern(StrictModel):
    """A regular expression for 表情 codes or emoji, masked before matching."""

    pattern: str = Field(min_length=1, description="Python regular expression.")
    note: str = Field(min_length=1, description="What it catches, with examples.")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class RefusalRule(StrictModel):
    """Seed rule: when the agent cannot meet a request, the reply's first words are 非常抱歉."""

    source: str = Field(min_length=1, description="Seed file and section.")
    rule: str = Field(min_length=1, description="The rule as the seed states it.")
    openers: list[_Phrase] = Field(min_length=1, description="Accepted first words of a refusal.")
    address_prefixes: list[_Phrase] = Field(
        default_factory=list, description="Forms of address allowed before the opener (亲,非常抱歉…)."
    )
    triggers: list[_Phrase] = Field(
        default_factory=list,
        description="Phrases besides negation_refusal hits that make a reply a refusal (无法…).",
    )
    note: str | None = Field(default=None, description="How the rule is applied.")


class Lexicons(StrictModel):
    """The whole lexicon file."""

    version: str = Field(min_length=1, description="Bumped whenever an entry changes.")
    emoticons: list[EmoticonPattern] = Field(description="表情 codes and emoji to mask before matching.")
    refusal_rule: RefusalRule = Field(description="The first-words rule for refusals.")
    groups: dict[PhraseGroup, LexiconGroup] = Field(description="Every group, keyed by its name.")

    @model_validator(mode="after")
    def _all_groups(self) -> Lexicons:
        missing = [g.value for g in PhraseGroup if g not in self.groups]
        if missing:
            raise ValueError(f"groups missing: {missing}")
        return self


def parse_lexicons(data: Any, path: str) -> Lexicons:
    """Validate already-parsed YAML; raise RubricError listing every problem with its location."""
    try:
        return Lexicons.model_validate(data)
    except ValidationError as exc:
        problems = [f"{' › '.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()]
        raise RubricError(path, problems) from None


LEXICON_ONLY_KEYS = frozenset({"emoticons", "refusal_rule", "groups"})
"""Top-level keys of a lexicon file that no rubric has: how `kefu rubric check rubric/*.yaml` tells them apart."""


def is_lexicon_file(path: Path) -> bool:
    """Whether `path` holds lexicons rather than a rubric. A file that cannot be read or parsed is not
    one: the rubric loader then reports it, with the line."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "dimensions" not in data and bool(LEXICON_ONLY_KEYS & set(data))


def load_lexicons(path: str | Path) -> Lexicons:
    """Load and validate a lexicon YAML file (rubric/lexicons.yaml)."""
    p = Path(path)
    text = read_yaml_source(p)
    try:
        # Unique keys: a second `banned:` list would silently replace the first, and its phrases go unchecked.
        data = load_yaml(text, unique_keys=True)
    except yaml.YAMLError as exc:
        raise RubricError(str(p), [f"不是有效的 YAML (not valid YAML)：{exc}"]) from None
    return parse_lexicons(data, str(p))
