"""JSON Lines text that stays one line for any reader: the Unicode line separators JSON leaves raw, escaped.

`json.dumps(..., ensure_ascii=False)` escapes every control character below U+0020 (\\n, \\r, \\v, \\f,
\\x1c-\\x1e among them) but writes U+0085, U+2028 and U+2029 as they are. A reader that splits on every
Unicode line boundary (Python's `str.splitlines`, some providers' batch loaders) would cut a line at
one of them, so every JSON Lines file kefu writes passes its lines through `escape_separators`.
"""

from __future__ import annotations

from typing import Final

RAW_SEPARATORS: Final = ("\x85", "\u2028", "\u2029")
"""The line boundaries of `str.splitlines` that JSON does not escape."""


def escape_separators(json_text: str) -> str:
    """`json_text` with U+0085, U+2028 and U+2029 written as JSON escapes (`\\u2028`…); the value is unchanged.

    JSON's own whitespace is ASCII, so these characters can only be inside strings, where the escape
    means the same character.
    """
    for char, escaped in _ESCAPES:
        json_text = json_text.replace(char, escaped)
    return json_text


_ESCAPES: Final = tuple((char, f"\\u{ord(char):04x}") for char in RAW_SEPARATORS)
