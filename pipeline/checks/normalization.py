"""Reply text as the phrase matcher compares it: NFKC, traditional to simplified, emoticons masked, offsets kept.

Full-width ＯＫ and ！ become OK and !, compatibility ideographs such as U+F967 become 不, and OpenCC
maps traditional to simplified (自己選吧 is 自己选吧); a `View` keeps the map back to the original
text, so a hit reports what the agent wrote.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property, partial
from typing import TypeVar, cast

_T = TypeVar("_T")


class _CharTable(dict[int, _T]):
    """A `str.translate` table that computes a character's value on first sight and keeps it.

    The Unicode database is then consulted once per distinct character per process rather than once
    per character of every reply; it holds at most one value per code point.
    """

    def __init__(self, value_of: Callable[[str], _T]) -> None:
        super().__init__()
        self._value_of = value_of

    def __missing__(self, code: int) -> _T:
        value = self[code] = self._value_of(chr(code))
        return value


def _letter_or_digit(ch: str) -> str | None:
    return ch if unicodedata.category(ch)[0] in "LN" else None


@cache
def _to_simplified() -> Callable[[str], str]:
    """OpenCC's traditional-to-simplified converter, loaded on first use (its dictionaries take a moment)."""
    import opencc  # the only module that uses OpenCC

    return cast(Callable[[str], str], opencc.OpenCC("t2s").convert)


def _simplified_char(ch: str) -> str:
    """One character to simplified, or itself: a lone surrogate (OpenCC cannot encode it) or a character
    that would not stay one character (offsets must still map)."""
    if "\ud800" <= ch <= "\udfff":
        return ch
    simple = _to_simplified()(ch)
    return simple if len(simple) == 1 else ch


_NFKC: _CharTable[str] = _CharTable(partial(unicodedata.normalize, "NFKC"))
"""Each character's NFKC form. No code point's form is empty, so a reply whose normalised text is as
long as itself has normalised every character to exactly one character."""
_SIMPLIFIED: _CharTable[str] = _CharTable(_simplified_char)
"""Each character's simplified form, without OpenCC's phrase table (the fallback of `normalize`)."""
_LETTERS: _CharTable[str | None] = _CharTable(_letter_or_digit)
"""Keeps letters and digits (categories L*, N*) and deletes everything else."""

_MASK = "\x01"
"""Replaces every character of an emoticon: neither a letter nor a gap (`phrases._GAP`), so a code never joins a
phrase."""


def normalize(text: str) -> str:
    """NFKC (character by character, so that offsets can be mapped back: see `View`), then traditional
    to simplified (問 → 问, 回覆 → 回复).

    OpenCC converts the whole text, with its phrase table, when that keeps every character in place
    (it does for Chinese text), so the offsets still map; otherwise, and for text OpenCC cannot
    encode (a lone surrogate), each character is converted on its own.
    """
    normal = text.translate(_NFKC)
    try:
        simple = _to_simplified()(normal)
    except UnicodeEncodeError:
        simple = ""
    return simple if len(simple) == len(normal) else normal.translate(_SIMPLIFIED)


def _blank(match: re.Match[str]) -> str:
    return _MASK * (match.end() - match.start())


@dataclass
class View:
    """A reply normalised and with emoticons masked, built once per reply and shared by every group.

    NFKC is applied per character rather than to the whole string: for Chinese chat text the result
    is the same, and it keeps an exact map from every normalised character to its source character.
    `origin[i]` is the original index of character i; None when every character normalised to one
    character (nearly every reply), since offsets are then unchanged.
    """

    text: str
    origin: list[int] | None

    @classmethod
    def of(cls, text: str, emoticons: re.Pattern[str]) -> View:
        """Normalise a reply and mask its emoticons, keeping the map to original offsets."""
        normal = normalize(text)
        origin = None if len(normal) == len(text) else [i for i, ch in enumerate(text) for _ in _NFKC[ord(ch)]]
        return cls(emoticons.sub(_blank, normal), origin)

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The original [start, end) covering normalised characters start..end-1."""
        if self.origin is None:
            return start, end
        return self.origin[start], self.origin[end - 1] + 1

    @cached_property
    def letters(self) -> str:
        """Letters and digits only (no punctuation, spaces or masked emoticons)."""
        return self.text.translate(_LETTERS)

    def letters_span(self) -> tuple[int, int]:
        """The normalised [start, end) from the first to the last letter or digit (of a reply that has one)."""
        positions = [i for i, ch in enumerate(self.text) if _LETTERS[ord(ch)] is not None]
        return positions[0], positions[-1] + 1
