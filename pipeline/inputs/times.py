"""Chat timestamps: the forms the readers accept, and the zone a naive time is read in."""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo

from pipeline.inputs.problems import shown

SHANGHAI: tzinfo = ZoneInfo("Asia/Shanghai")
"""The default zone for naive times: the platforms export Beijing time without an offset."""

TIME_FORMS = "ISO-8601, YYYY-MM-DD HH:MM:SS, YYYY/MM/DD HH:MM:SS, or epoch seconds/milliseconds"

# 10^11 seconds is the year 5138 and 10^11 milliseconds is 1973, so every plausible chat time
# falls clearly on one side.
_EPOCH_MS_FROM = 10**11
_EPOCH_STRING = re.compile(r"\d{10}(?:\d{3})?(?:\.\d+)?")
_LOOSE_TIME = re.compile(
    r"(\d{4})[-/](\d{1,2})[-/](\d{1,2})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?)?"
)
# Years outside this range are a unit mix-up or a zero timestamp, not a real chat.
_PLAUSIBLE_YEARS = range(2000, 2100)


def parse_time(value: str | int | float, default_tz: tzinfo = SHANGHAI) -> datetime:
    """Read one timestamp in any of TIME_FORMS; naive times get `default_tz`; the result is aware.

    An explicit offset is kept as given (not converted to UTC) so that prompts show the shop's
    local time. Raises ValueError with a message that quotes the value.
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int | float):
            parsed = _from_epoch(value, default_tz)
        elif _EPOCH_STRING.fullmatch(text := value.strip()):
            parsed = _from_epoch(float(text), default_tz)
        else:
            parsed = _from_calendar(text)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=default_tz)
    except (TypeError, ValueError, OverflowError, OSError):
        raise ValueError(f"bad timestamp {shown(value)} (expected {TIME_FORMS})") from None
    if parsed.year not in _PLAUSIBLE_YEARS:
        raise ValueError(f"bad timestamp {shown(value)}: the year {parsed.year} is not plausible for a chat")
    return parsed


def _from_epoch(value: float, tz: tzinfo) -> datetime:
    seconds = value / 1000 if abs(value) >= _EPOCH_MS_FROM else value
    return datetime.fromtimestamp(seconds, tz=tz)


def _from_calendar(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        match = _LOOSE_TIME.fullmatch(text)  # slashes, or unpadded 2026-3-2
        if match is None:
            raise
        year, month, day, hour, minute, second, fraction = match.groups()
        return datetime(
            int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
