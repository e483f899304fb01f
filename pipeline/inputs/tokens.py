"""The token estimate a transcript's text is budgeted by."""

from __future__ import annotations


def estimate_tokens(text: str) -> int:
    """A conservative token count for budgeting, without a tokenizer download.

    Every non-ASCII character (CJK, full-width punctuation, emoji) counts as one token, which is at
    or above what Qwen and o200k tokenizers spend on common Chinese; ASCII counts one token per three
    characters (English averages about four), rounded up. Rare characters and emoji can take more.
    """
    ascii_chars = len(text.encode("ascii", "ignore"))
    return len(text) - ascii_chars + -(-ascii_chars // 3)
