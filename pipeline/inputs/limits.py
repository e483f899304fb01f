"""Input limits: what a conversation's JSON and its strings must satisfy before a reader accepts them.

These rules keep every accepted value storable and printable, so that no input line can stop a run
(or every rerun) further down: the store, the exports and the prompt all get valid Unicode text.

- **Lone surrogates are rejected, not repaired.** JSON may spell half of a UTF-16 pair (`"\\ud800"`);
  Python decodes it into a string that cannot be encoded as UTF-8, so the stored grade, grades.jsonl
  and every export would fail on it. Replacing it with U+FFFD would grade text the shop never sent and
  quietly change the content hash; rejecting names the field, so the export can be fixed at its source.
  (Bytes never produce one: the decoders are strict or replace bad bytes with U+FFFD.)
- **Ids and names are one-line labels.** The id, platform, shop, agent id and speaker names become
  spreadsheet cells, summary groups and (the id) URLs; a control character or line separator in one
  is rejected (XLSX cannot even store most of them), and so is an id longer than MAX_ID_CHARS. Turn
  text may hold anything that is valid Unicode.
- **Lines are at most MAX_LINE_BYTES long.** A longer line is rejected unread (a binary file may have
  no line break at all).
- **JSON nests at most MAX_JSON_DEPTH levels.** A conversation needs three (line, turns, turn); the
  rest is room for exporters' extra keys. Deeper lines are refused before parsing, so the limit does
  not depend on how deep the parser's recursion happens to be allowed to go.
"""

from __future__ import annotations

import itertools
import re
import sys
import unicodedata

MAX_LINE_BYTES = 16 * 1024 * 1024
"""The longest line read, in bytes with its line break: far beyond any context window, and it keeps a file
without line breaks from being read into memory whole."""

MAX_ID_CHARS = 256
"""The longest conversation id accepted, in characters."""

MAX_JSON_DEPTH = 64
"""The deepest nesting of arrays and objects accepted in one JSON line."""

MAX_INT_DIGITS = sys.get_int_max_str_digits()
"""Python's limit on the digits of an integer read from text (4,300 by default); a longer number is a reject."""

_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def lone_surrogate(text: str) -> str | None:
    """How a lone surrogate in `text` reads in a reason ('\\ud800 at character 4'), or None if there is none."""
    if text.isascii():
        return None
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return f"{found.group()!r} at character {found.start() + 1}".replace("'", "")


def id_problem(conv_id: str) -> str | None:
    """Why `conv_id` cannot be a conversation id (too long, or see `label_problem`), or None."""
    if len(conv_id) > MAX_ID_CHARS:
        return f"the id is {len(conv_id):,} characters long; at most {MAX_ID_CHARS} are accepted"
    problem = label_problem(conv_id)
    return None if problem is None else f"the id {problem}"


def label_problem(value: str) -> str | None:
    """Why `value` cannot be a one-line label (a control character or line separator in it), or None."""
    if value.isprintable():  # the common case, at C speed; printable excludes Cc, Zl and Zp (and more)
        return None
    for char in value:
        if unicodedata.category(char) in ("Cc", "Zl", "Zp"):  # Cc covers \n, \r, \x85 and the other C0/C1 codes
            return f"contains the control character {char!r} (U+{ord(char):04X})"
    return None


def json_too_deep(text: str) -> bool:
    """True if the JSON in `text` nests arrays and objects more than MAX_JSON_DEPTH levels deep.

    Brackets inside strings are ignored; a line with few brackets is not examined at all. The depth is
    that of the open brackets, so `[[[[` with no closing ones counts too: the parser would recurse that
    deep before finding out.
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_STEP.__getitem__, brackets)), default=0) > MAX_JSON_DEPTH
