"""What a format reader raises on bad input (one field, or the rest of a file), and how a reason quotes it."""

from __future__ import annotations

from pipeline.models.transcript import Reject


class Invalid(Exception):
    """A problem with one field of one conversation; becomes that conversation's Reject."""

    def __init__(self, field_name: str | None, reason: str) -> None:
        self.field = field_name
        self.reason = reason
        super().__init__(reason)


class FileRejected(Exception):
    """The rest of a file cannot be read; carries the Reject that says why."""

    def __init__(self, reject: Reject) -> None:
        self.reject = reject
        super().__init__(reject.reason)


def shown(value: object) -> str:
    """`value` quoted for a reason a person reads: its repr (which escapes control characters and lone
    surrogates), shortened."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS - 1] + "…"


_SHOWN_CHARS = 80


def json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number")
