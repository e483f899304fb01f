"""Phrase checks: agent replies matched against the lexicons, reported with the original text.

The lexicons (rubric/lexicons.yaml, `checks.lexicons`) are data; this module matches them and reports
hits with the original text, so a QA lead sees exactly what the agent wrote.

Matching rules (why each exists):
- Only `Role.agent` turns are checked. The customer's words are not the agent's fault, and bot
  auto-replies are configured by the shop, not typed by the agent being graded.
- Text is compared after Unicode NFKC (full-width ＯＫ and ！ become OK and !, compatibility
  ideographs such as U+F967 become 不) and OpenCC's traditional-to-simplified mapping (自己選吧 is
  自己选吧), but hits report the span of the original text.
- A substring entry matches with spaces or punctuation between its characters (自己，选吧, 我不大　清楚):
  an agent who splits a phrase still wrote it. Regex entries match as written.
- 表情 codes ([微笑], /:) …), kaomoji and emoji are masked before matching, so text inside a code is
  never a hit and a code never joins one; a `whole` entry ignores them together with punctuation
  and spaces.
- A match lying inside one of its entry's (or group's) exceptions is not a hit: 不但是 is not 但是.
  Exceptions allow spaces between their characters but not punctuation, which ends a clause:
  您好像 is not the greeting 您好, 您好，像这款 is.
- Within a group, overlapping matches keep the longest (不能便宜 wins over 不能).
- Turn numbers are 1-based positions in `Transcript.turns`, counting every turn of every role.

Speed (the runner checks every transcript on its event loop): each reply is normalised once, each
literal is looked for once in all of a transcript's replies joined, and the reports are validated
in one call; the results are exactly those of checking every reply and group on its own.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from operator import itemgetter
from typing import Any

from pydantic import Field

from pipeline.checks.lexicons import LexiconEntry, LexiconGroup, Lexicons, MatchKind, PhraseGroup
from pipeline.checks.normalization import View, normalize
from pipeline.models.strict import StrictModel
from pipeline.models.transcript import Role, Transcript

_GAP = r"[^\w\x00\x01]*"
"""What a listed phrase may hold between two of its characters: spaces and punctuation (自己，选吧), never a
letter or digit, a masked emoticon or the separator between two replies."""


def _gapped(phrase: str, gap: str) -> str:
    """A regular expression for the phrase with `gap` allowed between any two of its characters."""
    return gap.join(map(re.escape, phrase))


class PhraseHit(StrictModel):
    """One occurrence of a lexicon phrase in an agent reply."""

    turn: int = Field(ge=1, description="1-based position of the turn in the transcript, counting every role.")
    group: PhraseGroup = Field(description="The lexicon group.")
    pattern: str = Field(description="The entry's pattern as written in the lexicon.")
    text: str = Field(description="The matched text exactly as the agent wrote it.")
    start: int = Field(ge=0, description="Start offset of `text` in the turn's original text.")
    end: int = Field(ge=0, description="End offset (exclusive) of `text` in the turn's original text.")
    suggestion: str | None = Field(default=None, description="The lexicon's suggested replacement.")


class RefusalCheck(StrictModel):
    """One refusal and whether it opened with the apology the seed prescribes."""

    turn: int = Field(ge=1, description="1-based turn number of the refusing reply.")
    opens_with_apology: bool = Field(description="Whether the reply's first words are an accepted opener.")
    first_words: str = Field(description="The reply's first characters after emoticons and punctuation, as evidence.")
    triggered_by: str = Field(description="The refusal phrase that made this reply a refusal, as written.")


class PhraseReport(StrictModel):
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
            "negative_language_hits": self.counts[PhraseGroup.negative_language],
            "but_words_hits": self.counts[PhraseGroup.but_words],
            "honorific_used": self.honorific_used,
            "greeting_found": self.greeting_found,
            "closing_found": self.closing_found,
            "refusal_replies": len(self.refusals),
            "refusals_without_apology": sum(not r.opens_with_apology for r in self.refusals),
            "refusal_first_words_ok": self.refusal_first_words_ok,
            "phrase_hits": json.dumps(violations, ensure_ascii=False, separators=(",", ":")),
        }


_VIOLATION_GROUPS = (PhraseGroup.banned, PhraseGroup.negation_refusal, PhraseGroup.negative_language,
                     PhraseGroup.but_words)


_SEPARATOR = "\x00"
"""Joins a transcript's replies into one text; a literal without it cannot match across two replies."""


@dataclass(frozen=True)
class _Entry:
    """One substring or regex entry compiled, with the exceptions that can contain its matches."""

    index: int
    """Position in the group: among candidates of equal span, the earlier entry wins."""
    entry: LexiconEntry
    needle: str | None
    """The first character of a substring entry: a text without it cannot match (cheaper than a search)."""
    joined: bool
    """Searched once in the joined replies: a literal that, like its exceptions, has no separator in it.
    Regexes are searched reply by reply, since anchors, lookarounds and `.` see the neighbouring reply."""
    regex: re.Pattern[str]
    exceptions: tuple[re.Pattern[str], ...]
    any_exception: re.Pattern[str] | None
    """All exceptions in one alternation: when none occurs in a text, no match needs checking."""

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Non-empty matches in `text` not lying inside one of the exceptions' occurrences."""
        spans = [m.span() for m in self.regex.finditer(text) if m.end() > m.start()]
        if spans and self.any_exception is not None and self.any_exception.search(text):
            # re.finditer finds an exception's non-overlapping occurrences; those are the ones that count.
            allowed = [m.span() for x in self.exceptions for m in x.finditer(text)]
            spans = [(s, e) for s, e in spans if not any(a <= s and e <= b for a, b in allowed)]
        return spans


@dataclass(frozen=True)
class _Group:
    """A group compiled. Its whole-reply entries share one alternation, `((?:p1)+)|((?:p2)+)|…`:
    fullmatching the letters tries them in order, and the capture group that took part names the
    first entry that matches, which is the only whole-reply candidate that can be kept."""

    searched: tuple[_Entry, ...]
    whole: tuple[tuple[int, LexiconEntry], ...]
    any_whole: re.Pattern[str] | None
    not_whole: re.Pattern[str] | None
    """A sure letter (ASCII letter or digit, CJK ideograph U+4E00–U+9FA5) that no whole-reply pattern
    contains: a reply holding one cannot be those patterns repeated, so its letters need not be built."""


@dataclass(frozen=True)
class _Replies:
    """A transcript's agent replies, each normalised, and end to end in `text` with `_SEPARATOR` between
    them, so that each literal entry is looked for once per transcript rather than once per reply."""

    turns: list[int]
    originals: list[str]
    views: list[View]
    starts: list[int]
    """Offset of each reply in `text`."""
    text: str

    @classmethod
    def of(cls, replies: list[tuple[int, str]], emoticons: re.Pattern[str]) -> _Replies:
        """`replies` are (turn number, original text) pairs."""
        originals = [text for _, text in replies]
        views = [View.of(text, emoticons) for text in originals]
        starts = list(accumulate((len(v.text) + 1 for v in views), initial=0))[: len(views)]
        joined = _SEPARATOR.join(v.text for v in views)
        return cls([n for n, _ in replies], originals, views, starts, joined)


_Found = list[tuple[int, int, int, LexiconEntry]]
"""Kept matches of one group in a transcript: reply index, normalised (start, end) in that reply, and
the entry; in reply and text order."""


class PhraseChecker:
    """Lexicons compiled once, then applied to any number of transcripts."""

    def __init__(self, lexicons: Lexicons) -> None:
        self.lexicons = lexicons
        self._emoticons = re.compile("|".join(f"(?:{e.pattern})" for e in lexicons.emoticons))
        self._groups = {group: self._compile(lexicons.groups[group]) for group in PhraseGroup}
        rule = lexicons.refusal_rule
        self._openers = tuple(normalize(o) for o in rule.openers)
        self._prefixes = tuple(sorted((normalize(p) for p in rule.address_prefixes), key=len, reverse=True))
        self._triggers = tuple(normalize(t) for t in rule.triggers)

    @staticmethod
    def _compile(spec: LexiconGroup) -> _Group:
        searched = []
        whole = []
        for index, entry in enumerate(spec.entries):
            pattern = normalize(entry.pattern)
            if entry.match is MatchKind.whole:
                whole.append((index, entry, pattern))
                continue
            literal = entry.match is MatchKind.substring
            exceptions = [normalize(e) for e in (*entry.exceptions, *spec.exceptions)]
            if literal:  # a substring match is the pattern itself, so only exceptions containing it can hold it
                exceptions = [e for e in exceptions if pattern in e]
            searched.append(
                _Entry(
                    index=index,
                    entry=entry,
                    needle=pattern[0] if literal else None,
                    joined=literal and not any(_SEPARATOR in p for p in (pattern, *exceptions)),
                    regex=re.compile(_gapped(pattern, _GAP) if literal else pattern),
                    exceptions=tuple(re.compile(_gapped(e, r"\s*")) for e in exceptions),
                    any_exception=re.compile("|".join(_gapped(e, r"\s*") for e in exceptions)) if exceptions else None,
                )
            )
        any_whole = "|".join(f"((?:{re.escape(pattern)})+)" for _, _, pattern in whole)
        whole_chars = "".join(re.escape(ch) for ch in sorted({ch for _, _, pattern in whole for ch in pattern}))
        return _Group(
            searched=tuple(searched),
            whole=tuple((index, entry) for index, entry, _ in whole),
            any_whole=re.compile(any_whole) if whole else None,
            not_whole=re.compile(f"(?![{whole_chars}])[A-Za-z0-9\\u4e00-\\u9fa5]") if whole else None,
        )

    @staticmethod
    def _find(group: _Group, replies: _Replies) -> _Found:
        """One group's matches in every reply, longest first among overlapping ones, in text order.

        Every entry's matches are candidates (an exception drops a match only for its own entry);
        ties of start and length go to the earlier entry. Candidates are placed in the joined text,
        where no two replies' candidates overlap, so one left-to-right pass keeps the same matches
        as a pass per reply.
        """
        candidates: list[tuple[int, int, int, int, LexiconEntry]] = []  # start, -length, index, end, entry
        for e in group.searched:
            if e.needle is not None and e.needle not in replies.text:
                continue
            if e.joined:
                candidates.extend((s, s - t, e.index, t, e.entry) for s, t in e.spans(replies.text))
                continue
            for offset, view in zip(replies.starts, replies.views, strict=True):
                candidates.extend((offset + s, s - t, e.index, offset + t, e.entry) for s, t in e.spans(view.text))
        if group.any_whole is not None and group.not_whole is not None:
            for offset, view in zip(replies.starts, replies.views, strict=True):
                if group.not_whole.search(view.text) is None and (
                    whole := group.any_whole.fullmatch(view.letters)
                ) is not None:
                    index, entry = group.whole[next(i for i, g in enumerate(whole.groups()) if g is not None)]
                    s, t = view.letters_span()
                    candidates.append((offset + s, s - t, index, offset + t, entry))
        candidates.sort(key=itemgetter(0, 1, 2))
        found: _Found = []
        reach = 0  # matches are never empty, so one overlaps a kept match exactly when it starts before this
        for start, _, _, end, entry in candidates:
            if start >= reach:
                reply = bisect_right(replies.starts, start) - 1
                offset = replies.starts[reply]
                found.append((reply, start - offset, end - offset, entry))
                reach = end
        return found

    @staticmethod
    def _hit(group: PhraseGroup, replies: _Replies, reply: int, start: int, end: int,
             entry: LexiconEntry) -> dict[str, Any]:
        """PhraseHit's fields: validating them with the report is cheaper than one model per hit."""
        o_start, o_end = replies.views[reply].span(start, end)
        return {"turn": replies.turns[reply], "group": group, "pattern": entry.pattern,
                "text": replies.originals[reply][o_start:o_end], "start": o_start, "end": o_end,
                "suggestion": entry.suggestion}

    def find(self, group: PhraseGroup, text: str, turn: int = 1) -> list[PhraseHit]:
        """Every hit of one group in one reply, longest first among overlapping matches, in text order."""
        replies = _Replies.of([(turn, text)], self._emoticons)
        found = self._find(self._groups[group], replies)
        return [PhraseHit.model_validate(self._hit(group, replies, *f)) for f in found]

    def _refusal(self, turn: int, view: View, refusal_trigger: str | None) -> dict[str, Any] | None:
        """RefusalCheck's fields, or None when the reply refuses nothing."""
        trigger = refusal_trigger
        if trigger is None:
            trigger = next((t for t in self._triggers if t in view.text), None)
        if trigger is None:
            return None
        letters = view.letters
        rest = letters
        while prefix := next((p for p in self._prefixes if rest.startswith(p)), None):
            rest = rest[len(prefix) :]
        return {"turn": turn, "opens_with_apology": rest.startswith(self._openers),
                "first_words": letters[:10], "triggered_by": trigger}

    def check(self, transcript: Transcript) -> PhraseReport:
        """Run every group over the transcript's human agent replies."""
        replies = _Replies.of(
            [(n, t.text) for n, t in enumerate(transcript.turns, start=1) if t.role is Role.agent], self._emoticons
        )
        found = {name: self._find(group, replies) for name, group in self._groups.items()}
        # In turn and text order; equal starts in one reply keep the group order (a stable sort by start).
        ordered = sorted(
            ((f[0], f[1], order, name, f) for order, (name, fs) in enumerate(found.items()) for f in fs),
            key=itemgetter(0, 1, 2),
        )
        hits = [self._hit(name, replies, *f) for _, _, _, name, f in ordered]
        first_negation: dict[int, str] = {}
        for h in hits:
            if h["group"] is PhraseGroup.negation_refusal:
                first_negation.setdefault(h["turn"], h["text"])
        refusals = [
            refusal
            for turn, view in zip(replies.turns, replies.views, strict=True)
            if (refusal := self._refusal(turn, view, first_negation.get(turn))) is not None
        ]
        counts = dict.fromkeys(PhraseGroup, 0)
        for h in hits:
            counts[h["group"]] += 1
        has_agent = bool(replies.turns)
        last = len(replies.turns) - 1
        return PhraseReport.model_validate({
            "transcript_id": transcript.id,
            "agent_turns": len(replies.turns),
            "hits": hits,
            "counts": counts,
            "honorific_used": bool(found[PhraseGroup.honorifics]) if has_agent else None,
            "greeting_found": any(f[0] == 0 for f in found[PhraseGroup.greetings]) if has_agent else None,
            "closing_found": any(f[0] == last for f in found[PhraseGroup.closings]) if has_agent else None,
            "refusals": refusals,
        })

