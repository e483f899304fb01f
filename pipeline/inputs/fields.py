"""Field values of a conversation: the checks every format applies to ids, names, ratings and times."""

from __future__ import annotations

from datetime import datetime, tzinfo
from typing import Any

from pipeline.inputs.limits import label_problem, lone_surrogate
from pipeline.inputs.problems import Invalid, json_type, shown
from pipeline.inputs.times import TIME_FORMS, parse_time


def _scalar_text(value: object, field_name: str) -> str | None:
    """A JSON string, or a number as text (ids are often numeric); None for anything else.

    A string holding a lone surrogate is rejected here (see pipeline.inputs.limits for why)."""
    if isinstance(value, str):
        surrogate = lone_surrogate(value)
        if surrogate is not None:
            raise Invalid(field_name, f"not valid Unicode text: a lone surrogate {surrogate} "
                                       "(half of a UTF-16 pair, as the JSON escape spells it)")
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def required_text(obj: dict[str, Any], key: str, field_name: str) -> str:
    value = obj.get(key)
    if value is None:
        raise Invalid(field_name, f"missing field '{key}'")
    text = _scalar_text(value, field_name)
    if text is None:
        raise Invalid(field_name, f"'{key}' must be a string, got {json_type(value)}")
    return text


def star_rating(value: object) -> int | None:
    """A 1–5 star rating from JSON or a CSV cell; blank is 'not rated'."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        stars = int(str(value).strip()) if not isinstance(value, bool) else -1
    except ValueError:
        stars = -1
    if not 1 <= stars <= 5:
        raise Invalid("satisfaction", f"'satisfaction' must be a star rating from 1 to 5, got {shown(value)}")
    return stars


def optional_label(obj: dict[str, Any], key: str, field_name: str) -> str | None:
    """An optional one-line name (platform, shop, agent_id, speaker) of a JSON object."""
    value = obj.get(key)
    if value is None:
        return None
    text = _scalar_text(value, field_name)
    if text is None:
        raise Invalid(field_name, f"'{key}' must be a string, got {json_type(value)}")
    return checked_label(text, field_name)


def checked_label(value: str, field_name: str) -> str:
    """`value`, if it can be a one-line name (input_limits.label_problem)."""
    problem = label_problem(value)
    if problem is not None:
        raise Invalid(field_name, f"'{field_name}' {problem}")
    return value


def field_time(value: object, field_name: str, default_tz: tzinfo) -> datetime:
    """A turn's timestamp (see times.parse_time); Invalid names `field_name` if it is not one."""
    if not isinstance(value, str | int | float):
        raise Invalid(field_name, f"bad timestamp {shown(value)} (expected {TIME_FORMS})")
    try:
        return parse_time(value, default_tz)
    except ValueError as exc:
        raise Invalid(field_name, str(exc)) from None
