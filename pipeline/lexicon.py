"""Phrase lexicons: the YAML models, and the checks of agent replies against them.

The lexicons (rubric/lexicons.yaml) are data; this module loads them, matches them and reports
hits with the original text, so a QA lead sees exactly what the agent wrote.

Matching rules (why each exists):
- Only `Role.agent` turns are checked. The customer's words are not the agent's fault, and bot
  auto-replies are configured by the shop, not typed by the agent being graded.
- Text is compared after Unicode NFKC (full-width ＯＫ and ！ become OK and !, compatibility
  ideographs such as U+F967 become 不), but hits report the span of the original text.
- 表情 codes ([微笑], /:) …), kaomoji and emoji are masked with spaces before matching, so text
  inside a code is never a hit; a `whole` entry ignores them together with punctuation and spaces.
- A match lying inside one of its entry's (or group's) exceptions is not a hit: 不但是 is not 但是.
- Within a group, overlapping matches keep the longest (不能便宜 wins over 不能).
- Turn numbers are 1-based positions in `Transcript.turns`, counting every turn of every role.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import RubricError
from pipeline.transcripts import Role, Transcript


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    but_words = "but_words"
    honorifics = "honorifics"
    greetings = "greetings"
    closings = "closings"


class LexiconEntry(_Strict):
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
                compiled = re.compile(_normalize(self.pattern))
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
            useless = [e for e in self.exceptions if not compiled.search(_normalize(e))]
        elif self.match is MatchKind.whole:
            if self.exceptions:
                raise ValueError(f"pattern {self.pattern!r}: a whole-reply entry cannot have exceptions")
            useless = []
        else:
            useless = [e for e in self.exceptions if _normalize(self.pattern) not in _normalize(e)]
        if useless:
            raise ValueError(f"pattern {self.pattern!r}: exceptions {useless} do not contain it, so never apply")
        return self


class LexiconGroup(_Strict):
    """A group of entries with the exceptions they share."""

    description: str = Field(min_length=1, description="What the group checks and on which seed rule.")
    exceptions: list[_Phrase] = Field(
        default_factory=list,
        description="Allowed longer words applying to every entry of the group they contain.",
    )
    entries: list[LexiconEntry] = Field(min_length=1, description="The phrases.")

    @model_validator(mode="after")
    def _check_entries(self) -> LexiconGroup:
        counts = Counter(_normalize(e.pattern) for e in self.entries)
        duplicates = sorted(p for p, n in counts.items() if n > 1)
        if duplicates:
            raise ValueError(f"patterns listed twice: {duplicates}")
        literal = [_normalize(e.pattern) for e in self.entries if e.match is MatchKind.substring]
        useless = [e for e in self.exceptions if not any(p in _normalize(e) for p in literal)]
        if useless:
            raise ValueError(f"group exceptions {useless} contain none of the group's substring patterns")
        return self


class EmoticonPattern(_Strict):
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


class RefusalRule(_Strict):
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


class Lexicons(_Strict):
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


def _normalize(text: str) -> str:
    """NFKC, character by character, so that offsets can be mapped back (see `_View`)."""
    return "".join(unicodedata.normalize("NFKC", ch) for ch in text)


@dataclass(frozen=True)
class _View:
    """A reply normalised and with emoticons masked; `origin[i]` is the original index of character i.

    NFKC is applied per character rather than to the whole string: for Chinese chat text the result
    is the same, and it keeps an exact map from every normalised character to its source character.
    """

    text: str
    origin: list[int]

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original [start, end) covering normalised characters start..end-1."""
        return self.origin[start], self.origin[end - 1] + 1

    def content(self) -> tuple[str, list[int]]:
        """Letters and digits only (no punctuation, spaces or masked emoticons), with their positions."""
        positions = [i for i, ch in enumerate(self.text) if unicodedata.category(ch)[0] in "LN"]
        return "".join(self.text[i] for i in positions), positions


class PhraseHit(_Strict):
    """One occurrence of a lexicon phrase in an agent reply."""

    turn: int = Field(ge=1, description="1-based position of the turn in the transcript, counting every role.")
    group: PhraseGroup = Field(description="The lexicon group.")
    pattern: str = Field(description="The entry's pattern as written in the lexicon.")
    text: str = Field(description="The matched text exactly as the agent wrote it.")
    start: int = Field(ge=0, description="Start offset of `text` in the turn's original text.")
    end: int = Field(ge=0, description="End offset (exclusive) of `text` in the turn's original text.")
    suggestion: str | None = Field(default=None, description="The lexicon's suggested replacement.")


class RefusalCheck(_Strict):
    """One refusal and whether it opened with the apology the seed prescribes."""

    turn: int = Field(ge=1, description="1-based turn number of the refusing reply.")
    opens_with_apology: bool = Field(description="Whether the reply's first words are an accepted opener.")
    first_words: str = Field(description="The reply's first characters after emoticons and punctuation, as evidence.")
    triggered_by: str = Field(description="The refusal phrase that made this reply a refusal, as written.")


class PhraseReport(_Strict):
    """Phrase checks of one transcript. Booleans are None when the transcript has no agent reply."""

    transcript_id: str = Field(description="The transcript checked.")
    agent_turns: int = Field(ge=0, description="How many human agent replies were checked.")
    hits: list[PhraseHit] = Field(description="Every hit of every group, in turn and text order.")
    counts: dict[PhraseGroup, int] = Field(description="Number of hits per group (every group present).")
    honorific_used: bool | None = Field(description="Whether any agent reply addresses the customer as 您 or 亲.")
    greeting_found: bool | None = Field(description="Whether the agent's first reply contains a standard opener.")
    closing_found: bool | None = Field(description="Whether the agent's last reply contains a standard farewell.")
    refusals: list[RefusalCheck] = Field(description="Each refusing reply and its first-words check.")

    @property
    def refusal_first_words_ok(self) -> bool | None:
        """True when every refusal opened with the apology; None when there was no refusal."""
        return all(r.opens_with_apology for r in self.refusals) if self.refusals else None

    def columns(self) -> dict[str, str | int | bool | None]:
        """Flat, JSON-friendly values for one CSV row; `phrase_hits` is the violations as compact JSON."""
        violations = [
            {"turn": h.turn, "group": h.group.value, "text": h.text, "suggestion": h.suggestion}
            for h in self.hits
            if h.group in _VIOLATION_GROUPS
        ]
        return {
            "banned_hits": self.counts[PhraseGroup.banned],
            "negation_refusal_hits": self.counts[PhraseGroup.negation_refusal],
            "but_words_hits": self.counts[PhraseGroup.but_words],
            "honorific_used": self.honorific_used,
            "greeting_found": self.greeting_found,
            "closing_found": self.closing_found,
            "refusal_replies": len(self.refusals),
            "refusals_without_apology": sum(not r.opens_with_apology for r in self.refusals),
            "refusal_first_words_ok": self.refusal_first_words_ok,
            "phrase_hits": json.dumps(violations, ensure_ascii=False, separators=(",", ":")),
        }


_VIOLATION_GROUPS = (PhraseGroup.banned, PhraseGroup.negation_refusal, PhraseGroup.but_words)


def _position(hit: PhraseHit) -> tuple[int, int]:
    return hit.turn, hit.start


@dataclass(frozen=True)
class _Matcher:
    """One entry compiled: `whole` entries fullmatch the reply's letters with `(?:pattern)+`."""

    group: PhraseGroup
    entry: LexiconEntry
    regex: re.Pattern[str]
    exceptions: tuple[str, ...]


class PhraseChecker:
    """Lexicons compiled once, then applied to any number of transcripts."""

    def __init__(self, lexicons: Lexicons) -> None:
        self.lexicons = lexicons
        self._emoticons = re.compile("|".join(f"(?:{e.pattern})" for e in lexicons.emoticons))
        self._matchers = {group: self._compile(group, lexicons.groups[group]) for group in PhraseGroup}
        rule = lexicons.refusal_rule
        self._openers = tuple(_normalize(o) for o in rule.openers)
        self._prefixes = tuple(sorted((_normalize(p) for p in rule.address_prefixes), key=len, reverse=True))
        self._triggers = tuple(_normalize(t) for t in rule.triggers)

    @staticmethod
    def _compile(group: PhraseGroup, spec: LexiconGroup) -> list[_Matcher]:
        matchers = []
        for entry in spec.entries:
            pattern = _normalize(entry.pattern)
            exceptions: tuple[str, ...] = ()
            if entry.match is MatchKind.whole:
                regex = re.compile(f"(?:{re.escape(pattern)})+")
            else:
                regex = re.compile(pattern if entry.match is MatchKind.regex else re.escape(pattern))
                exceptions = tuple(_normalize(e) for e in (*entry.exceptions, *spec.exceptions))
            matchers.append(_Matcher(group=group, entry=entry, regex=regex, exceptions=exceptions))
        return matchers

    def _view(self, text: str) -> _View:
        """Normalise a reply and mask emoticons with spaces, keeping the map to original offsets."""
        chars: list[str] = []
        origin: list[int] = []
        for i, ch in enumerate(text):
            for norm in unicodedata.normalize("NFKC", ch):
                chars.append(norm)
                origin.append(i)
        for m in self._emoticons.finditer("".join(chars)):
            chars[m.start() : m.end()] = " " * (m.end() - m.start())
        return _View("".join(chars), origin)

    def find(self, group: PhraseGroup, text: str, turn: int = 1) -> list[PhraseHit]:
        """Every hit of one group in one reply, longest first among overlapping matches, in text order."""
        view = self._view(text)
        candidates: list[tuple[int, int, _Matcher]] = []
        for matcher in self._matchers[group]:
            candidates.extend((s, e, matcher) for s, e in self._match(matcher, view))
        candidates.sort(key=lambda c: (c[0], -(c[1] - c[0])))
        kept: list[tuple[int, int, _Matcher]] = []
        for start, end, matcher in candidates:
            if all(end <= s or start >= e for s, e, _ in kept):
                kept.append((start, end, matcher))
        hits = []
        for start, end, matcher in sorted(kept, key=lambda c: c[0]):
            o_start, o_end = view.span(start, end)
            hits.append(
                PhraseHit(
                    turn=turn,
                    group=group,
                    pattern=matcher.entry.pattern,
                    text=text[o_start:o_end],
                    start=o_start,
                    end=o_end,
                    suggestion=matcher.entry.suggestion,
                )
            )
        return hits

    @staticmethod
    def _match(matcher: _Matcher, view: _View) -> list[tuple[int, int]]:
        if matcher.entry.match is MatchKind.whole:
            letters, positions = view.content()
            return [(positions[0], positions[-1] + 1)] if matcher.regex.fullmatch(letters) else []
        allowed = [(m.start(), m.end()) for e in matcher.exceptions for m in re.finditer(re.escape(e), view.text)]
        return [
            (m.start(), m.end())
            for m in matcher.regex.finditer(view.text)
            if m.end() > m.start() and not any(s <= m.start() and m.end() <= e for s, e in allowed)
        ]

    def _refusal(self, turn: int, text: str, refusal_hits: list[PhraseHit]) -> RefusalCheck | None:
        view = self._view(text)
        trigger = refusal_hits[0].text if refusal_hits else next((t for t in self._triggers if t in view.text), None)
        if trigger is None:
            return None
        letters, _ = view.content()
        rest = letters
        while prefix := next((p for p in self._prefixes if rest.startswith(p)), None):
            rest = rest[len(prefix) :]
        return RefusalCheck(
            turn=turn,
            opens_with_apology=rest.startswith(self._openers),
            first_words=letters[:10],
            triggered_by=trigger,
        )

    def check(self, transcript: Transcript) -> PhraseReport:
        """Run every group over the transcript's human agent replies."""
        agent_turns = [(i, t.text) for i, t in enumerate(transcript.turns, start=1) if t.role is Role.agent]
        per_turn = {n: {g: self.find(g, text, n) for g in PhraseGroup} for n, text in agent_turns}
        hits = sorted((h for n, _ in agent_turns for g in PhraseGroup for h in per_turn[n][g]), key=_position)
        refusals = [
            check
            for n, text in agent_turns
            if (check := self._refusal(n, text, per_turn[n][PhraseGroup.negation_refusal])) is not None
        ]
        has_agent = bool(agent_turns)
        return PhraseReport(
            transcript_id=transcript.id,
            agent_turns=len(agent_turns),
            hits=hits,
            counts={g: sum(h.group is g for h in hits) for g in PhraseGroup},
            honorific_used=any(per_turn[n][PhraseGroup.honorifics] for n, _ in agent_turns) if has_agent else None,
            greeting_found=bool(per_turn[agent_turns[0][0]][PhraseGroup.greetings]) if has_agent else None,
            closing_found=bool(per_turn[agent_turns[-1][0]][PhraseGroup.closings]) if has_agent else None,
            refusals=refusals,
        )


def parse_lexicons(data: Any, path: str) -> Lexicons:
    """Validate already-parsed YAML; raise RubricError listing every problem with its location."""
    try:
        return Lexicons.model_validate(data)
    except ValidationError as exc:
        problems = [f"{' › '.join(str(p) for p in e['loc']) or 'file'}: {e['msg']}" for e in exc.errors()]
        raise RubricError(path, problems) from None


def load_lexicons(path: str | Path) -> Lexicons:
    """Load and validate a lexicon YAML file (rubric/lexicons.yaml)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(str(p), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise RubricError(str(p), [f"not valid YAML: {exc}"]) from None
    return parse_lexicons(data, str(p))
