"""OpenAI's rate-limit headers: reading them from a reply, and writing them (for the mock server).

OpenAI and Azure send, on every reply, `x-ratelimit-limit-requests`, `x-ratelimit-remaining-requests`,
`x-ratelimit-reset-requests` and the `-tokens` equivalents: the bucket's capacity, what is left in it,
and the time until it is full again, as a Go duration ("1s", "6m0s", "20ms", "1.5s").
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Literal, NamedTuple

LimitKind = Literal["requests", "tokens"]
KINDS: tuple[LimitKind, ...] = ("requests", "tokens")

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class LimitReading(NamedTuple):
    """One limit as a reply reported it."""

    limit: float
    """The bucket's capacity (OpenAI: the per-minute limit)."""
    remaining: float
    """What was left in it when the reply was written."""
    reset: float
    """Seconds until it is full again."""

    @property
    def rate(self) -> float | None:
        """Refill per second implied by the reading, when the bucket is not full (else unknown)."""
        if self.reset <= 0 or self.remaining >= self.limit:
            return None
        return (self.limit - self.remaining) / self.reset


def parse_duration(text: str) -> float | None:
    """Seconds in a Go duration ("6m0s", "20ms", "1.5s") or a bare number of seconds; None if unreadable."""
    text = text.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return total if position == len(text) and position > 0 else None


def format_duration(seconds: float) -> str:
    """A Go duration as OpenAI writes it: "20ms" below a second, else "1s", "1.5s", "6m0s", "1h0m0s"."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    tail = f"{round(secs, 3):g}s"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{tail}"
    return f"{int(minutes)}m{tail}" if minutes else tail


def read_limit(headers: Mapping[str, str], kind: LimitKind) -> LimitReading | None:
    """The `kind` limit of a reply's headers, or None when they are missing or unreadable."""
    limit = headers.get(f"x-ratelimit-limit-{kind}")
    if limit is None:  # the common case, one look-up: every reply passes through here
        return None
    remaining = headers.get(f"x-ratelimit-remaining-{kind}")
    reset = headers.get(f"x-ratelimit-reset-{kind}")
    if remaining is None or reset is None:
        return None
    try:
        capacity, left = float(limit), float(remaining)
    except ValueError:
        return None
    seconds = parse_duration(reset)
    if seconds is None or not (math.isfinite(capacity) and math.isfinite(left)) or capacity <= 0 or left < 0:
        return None
    return LimitReading(capacity, min(left, capacity), seconds)


def limit_headers(kind: LimitKind, limit: float, remaining: int, reset: float) -> dict[str, str]:
    """The three headers of one limit, as OpenAI writes them."""
    return {
        f"x-ratelimit-limit-{kind}": f"{limit:g}",
        f"x-ratelimit-remaining-{kind}": str(remaining),
        f"x-ratelimit-reset-{kind}": format_duration(reset),
    }
