"""The service-check columns as data: what each column of scores.csv's checks holds.

Rubric hooks (`caps`, `critical`) name these columns, so the rubric layer reads this vocabulary
without importing the code that computes the checks (pipeline/checks/).
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

ColumnValue = str | int | float | bool | None


class FirstReply(StrEnum):
    """What happened to the customer's first message."""

    answered = "answered"
    no_human_reply = "no_human_reply"
    no_customer_message = "no_customer_message"
    not_measurable = "not_measurable"


class CheckKind(StrEnum):
    """What a check column holds, which decides the comparisons a rubric hook may use on it."""

    number = "number"
    """A count, a share or seconds: compared with above / at_least / below / at_most."""
    flag = "flag"
    """True, False, or None when not applicable: compared with `is`."""
    reason = "reason"
    """A reason text when something is wrong, else None: `is: true` holds when a reason is present."""
    choice = "choice"
    """One of a fixed set of words: compared with `equals`."""
    detail = "detail"
    """Evidence for people (JSON text); hooks cannot name it."""


class CheckSpec(NamedTuple):
    """One check column: its kind and, for a choice, the words it can hold."""

    kind: CheckKind
    choices: tuple[str, ...] = ()


_NUMBER = CheckSpec(CheckKind.number)
_FLAG = CheckSpec(CheckKind.flag)

CHECKS: dict[str, CheckSpec] = {
    # SessionTiming.columns()
    "timing_not_measurable": CheckSpec(CheckKind.reason),
    "first_reply_status": CheckSpec(CheckKind.choice, tuple(f.value for f in FirstReply)),
    "first_response_s": _NUMBER,
    "first_bot_reply_s": _NUMBER,
    "first_reply_within_greet_limit": _FLAG,
    "first_reply_within_limit": _FLAG,
    "customer_messages": _NUMBER,
    "unanswered_messages": _NUMBER,
    "mean_wait_s": _NUMBER,
    "mean_wait_within_rate_limit": _FLAG,
    "max_wait_s": _NUMBER,
    "burst_mean_wait_s": _NUMBER,
    "burst_max_wait_s": _NUMBER,
    "share_within_reply_limit": _NUMBER,
    "share_within_rate_limit": _NUMBER,
    "satisfaction_stars": _NUMBER,
    "satisfied": _FLAG,
    # PhraseReport.columns()
    "banned_hits": _NUMBER,
    "negation_refusal_hits": _NUMBER,
    "negative_language_hits": _NUMBER,
    "but_words_hits": _NUMBER,
    "honorific_used": _FLAG,
    "greeting_found": _FLAG,
    "closing_found": _FLAG,
    "refusal_replies": _NUMBER,
    "refusals_without_apology": _NUMBER,
    "refusal_first_words_ok": _FLAG,
    "phrase_hits": CheckSpec(CheckKind.detail),
    # TranscriptChecks.greeting_columns(): wording and timing together
    "greeting_text": CheckSpec(CheckKind.detail),
    "greeted_within_limit": _FLAG,
}
"""Every check column in scores.csv order, with its kind (a test pins it to the reports' columns)."""
