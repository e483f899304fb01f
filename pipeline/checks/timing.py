"""Response times: per-transcript timing from turn timestamps, and Douyin-style rates per agent, shop and day.

Definitions (each chosen so that a QA lead can recompute it by hand from the transcript):
- A *reply* is a turn of `Role.agent`. Bot turns (auto-replies, robots) never count as replies;
  the first bot reply is reported separately. System notices are ignored.
- *First response*: from the customer's first message to the first agent turn after it. Agent
  turns before the customer's first message (proactive greetings, the tail of a transfer) are
  not replies to anything, so no time is ever negative.
- *Message wait*: every customer message waits until the next agent turn, measured from that
  message itself. Of a double message (问 … 问 … 答) the first waits longer than the second.
- *Burst wait*: the customer messages that share the same next agent reply form a burst (bot
  turns in between do not end it); its wait is measured from the burst's first message.
- *Unanswered*: a customer message with no agent turn after it.
- *Share within a limit*: customer messages answered within the limit over all customer
  messages, unanswered ones included (the 抖店 formula: 3分钟内回复的消息数 / 用户发送的消息数).
- A transcript with a customer or agent turn that has no timestamp is *not measurable*: every
  time is None and `not_measurable` says why. So is one whose timestamps run backwards. A bot
  turn without a timestamp only leaves the first bot reply time unknown.
- Naive timestamps are read in the shop's zone (the transcript readers already attach it);
  the *day* of a session is the date of its first customer message in the shop's zone.

Group rates (per agent, shop and day):
- 2分钟首次回复率: sessions first answered within the limit over measurable sessions with a
  customer message; a session the agent never answered counts as a miss. (抖店 divides by
  sessions transferred to a human; transcripts do not record the transfer.)
- 3分钟平均回复率, by default per session as seed 004 defines it ("calculated the same way as the
  2分钟首次回复率"): sessions whose mean message wait is within the limit over the same sessions as
  the first-reply rate; a session the agent never answered counts as a miss. With
  `reply_rate_basis: message`, customer messages answered within the limit over all customer
  messages, pooled over the group's measurable sessions (the 抖店 message formula).
- 满意度: sessions rated `satisfied_min_stars` or more over rated sessions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from enum import StrEnum
from itertools import groupby, pairwise
from operator import itemgetter
from statistics import fmean
from typing import TYPE_CHECKING, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AliasChoices, Field, field_validator

from pipeline.models.checks import ColumnValue, FirstReply
from pipeline.models.strict import StrictModel
from pipeline.models.transcript import Role, Transcript

if TYPE_CHECKING:  # loaded by the first count: checking a chat never needs them
    import pandas as pd


class ReplyRateBasis(StrEnum):
    """What the 3分钟平均回复率 counts."""

    session = "session"
    """Sessions whose mean message wait is within the limit, over sessions (seed 004's definition)."""
    message = "message"
    """Customer messages answered within the limit, over all customer messages, pooled."""


REPLY_RATE_DEFINITIONS = {
    ReplyRateBasis.session: (
        "3分钟平均回复率 = 平均回复时长≤3分钟的会话数 / 有顾客消息的会话数(按会话计,同2分钟首次回复率)"
    ),
    ReplyRateBasis.message: "3分钟平均回复率 = 3分钟内被回复的顾客消息数 / 顾客消息总数(按消息汇总)",
}
"""The definition printed beside the rate, per basis (the limit shown is the seed's default)."""


class TimingThresholds(StrictModel):
    """Service-standard limits; the defaults are the seeds' values."""

    greet_within_s: float = Field(
        default=10, gt=0, description="Seed 001 售前流程·欢迎语 and seed 002 欢迎语: greet within 10 s."
    )
    reply_within_s: float = Field(
        default=60, gt=0, description="Seed 002 在线咨询工作规范 6): answer every question within 1 minute."
    )
    first_reply_within_s: float = Field(
        default=120, gt=0, description="Seed 004 抖音 2分钟首次回复率: first reply within 2 minutes."
    )
    rate_reply_within_s: float = Field(
        default=180, gt=0, description="Seed 004 抖音 3分钟平均回复率: each reply within 3 minutes."
    )
    first_reply_rate_min: float = Field(default=0.85, ge=0, le=1, description="Seed 004: 2分钟首次回复率 ≥ 85%.")
    reply_rate_min: float = Field(default=0.80, ge=0, le=1, description="Seed 004: 3分钟平均回复率 ≥ 80%.")
    satisfaction_rate_min: float = Field(default=0.80, ge=0, le=1, description="Seed 004: 满意度 ≥ 80%.")
    satisfied_min_stars: int = Field(
        default=4, ge=1, le=5, description="Seed 004: 满意度 counts 4- and 5-star ratings as satisfied."
    )
    reply_rate_basis: ReplyRateBasis = Field(
        default=ReplyRateBasis.session,
        description="Seed 004: 3分钟平均回复率 is computed like the first-reply rate, per session; "
        "`message` pools messages.",
    )


class ShopCalendar(StrictModel):
    """Which time zone each shop keeps: it reads naive timestamps and decides a session's day."""

    default_timezone: str = Field(default="Asia/Shanghai", description="IANA zone of shops not listed below.")
    shop_timezones: dict[str, str] = Field(default_factory=dict, description="IANA zone per shop name or id.")

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        _zone(value)
        return value

    @field_validator("shop_timezones")
    @classmethod
    def _known_zones(cls, value: dict[str, str]) -> dict[str, str]:
        for zone in value.values():
            _zone(zone)
        return value

    def zone(self, shop: str | None) -> ZoneInfo:
        """The shop's zone, or the default one."""
        return ZoneInfo(self.shop_timezones.get(shop or "", self.default_timezone))


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


class MessageWait(StrictModel):
    """One customer message and the agent reply it waited for."""

    turn: int = Field(ge=1, description="1-based turn number of the customer message.")
    reply_turn: int | None = Field(description="1-based turn number of the next agent turn; None if unanswered.")
    wait_s: float | None = Field(description="Seconds from this message to that reply; None if unanswered.")


class BurstWait(StrictModel):
    """Consecutive customer messages answered by the same agent turn, timed from the first of them."""

    first_turn: int = Field(ge=1, description="1-based turn number of the burst's first message.")
    messages: int = Field(ge=1, description="How many customer messages the burst holds.")
    reply_turn: int | None = Field(description="1-based turn number of the agent reply; None if unanswered.")
    wait_s: float | None = Field(description="Seconds from the burst's first message to the reply; None if unanswered.")


class SessionTiming(StrictModel):
    """Timing of one transcript. Every time is None, never 0, when it cannot be measured."""

    transcript_id: str = Field(description="The transcript measured.")
    agent: str | None = Field(description="Transcript.agent_id, else the speaker of the first agent turn.")
    shop: str | None = Field(description="Transcript.shop.")
    day: date | None = Field(description="Date of the first customer message in the shop's zone; None without times.")
    satisfaction: int | None = Field(ge=1, le=5, description="The customer's star rating, when the export has one.")
    not_measurable: str | None = Field(description="Why the times could not be measured; None when they could.")
    first_reply: FirstReply = Field(description="What happened to the customer's first message.")
    first_response_s: float | None = Field(
        default=None, description="Seconds from the first customer message to the first agent turn."
    )
    first_response_turn: int | None = Field(default=None, description="1-based turn number of that first agent reply.")
    first_bot_reply_s: float | None = Field(
        default=None, description="Seconds from the first customer message to the first bot turn."
    )
    first_reply_within_greet_limit: bool | None = Field(
        default=None,
        validation_alias=AliasChoices("first_reply_within_greet_limit", "greeted_within_limit"),
        description="First agent reply within `greet_within_s` (timing only; the greeting's wording is checked "
        "in pipeline/checks/checker.py); False when no agent ever replied. Records stored before it was renamed "
        "call it `greeted_within_limit`.",
    )
    first_reply_within_limit: bool | None = Field(
        default=None, description="First agent reply within `first_reply_within_s`; False when no agent ever replied."
    )
    message_waits: list[MessageWait] = Field(
        default_factory=list, description="Each customer message's wait, measured from itself."
    )
    bursts: list[BurstWait] = Field(
        default_factory=list, description="Each customer burst's wait, measured from its first message."
    )
    customer_messages: int | None = Field(
        default=None, description="Number of customer messages; None when not measurable."
    )
    unanswered_messages: int | None = Field(
        default=None, description="Customer messages with no agent turn after them."
    )
    messages_within_reply_limit: int | None = Field(
        default=None, description="Customer messages answered within `reply_within_s`."
    )
    messages_within_rate_limit: int | None = Field(
        default=None, description="Customer messages answered within `rate_reply_within_s`."
    )
    mean_wait_s: float | None = Field(default=None, description="Mean wait over answered customer messages.")
    mean_wait_within_rate_limit: bool | None = Field(
        default=None,
        description="mean_wait_s within `rate_reply_within_s` (the session counts for the per-session "
        "3分钟平均回复率); False when no agent ever replied.",
    )
    satisfied: bool | None = Field(
        default=None, description="satisfaction ≥ `satisfied_min_stars` (counts for 满意度); None without a rating."
    )
    max_wait_s: float | None = Field(default=None, description="Longest wait of an answered customer message.")
    burst_mean_wait_s: float | None = Field(default=None, description="Mean wait over answered bursts.")
    burst_max_wait_s: float | None = Field(default=None, description="Longest wait of an answered burst.")

    @property
    def share_within_reply_limit(self) -> float | None:
        """Customer messages answered within `reply_within_s` over all customer messages."""
        return _share(self.messages_within_reply_limit, self.customer_messages)

    @property
    def share_within_rate_limit(self) -> float | None:
        """Customer messages answered within `rate_reply_within_s` over all customer messages."""
        return _share(self.messages_within_rate_limit, self.customer_messages)

    def columns(self) -> dict[str, ColumnValue]:
        """Flat values for one CSV row (the per-message and per-burst lists stay out)."""
        return {
            "timing_not_measurable": self.not_measurable,
            "first_reply_status": self.first_reply.value,
            "first_response_s": self.first_response_s,
            "first_bot_reply_s": self.first_bot_reply_s,
            "first_reply_within_greet_limit": self.first_reply_within_greet_limit,
            "first_reply_within_limit": self.first_reply_within_limit,
            "customer_messages": self.customer_messages,
            "unanswered_messages": self.unanswered_messages,
            "mean_wait_s": self.mean_wait_s,
            "mean_wait_within_rate_limit": self.mean_wait_within_rate_limit,
            "max_wait_s": self.max_wait_s,
            "burst_mean_wait_s": self.burst_mean_wait_s,
            "burst_max_wait_s": self.burst_max_wait_s,
            "share_within_reply_limit": self.share_within_reply_limit,
            "share_within_rate_limit": self.share_within_rate_limit,
            "satisfaction_stars": self.satisfaction,
            "satisfied": self.satisfied,
        }


class TimingGroupReport(StrictModel):
    """Douyin-style rates of one agent in one shop on one day, with pass/fail against the thresholds."""

    agent: str | None = Field(description="The agent; None groups sessions with no known agent.")
    shop: str | None = Field(description="The shop; None groups sessions with no known shop.")
    day: date | None = Field(description="The day in the shop's zone; None groups sessions without timestamps.")
    sessions: int = Field(ge=0, description="All sessions in the group.")
    not_measurable_sessions: int = Field(ge=0, description="Sessions whose times could not be measured.")
    first_reply_sessions: int = Field(ge=0, description="Measurable sessions with a customer message.")
    first_replies_within: int = Field(ge=0, description="Of those, first answered within `first_reply_within_s`.")
    first_reply_rate: float | None = Field(description="2分钟首次回复率; None without eligible sessions.")
    first_reply_pass: bool | None = Field(description="first_reply_rate ≥ first_reply_rate_min.")
    reply_sessions_within: int = Field(
        ge=0, description="Of first_reply_sessions, those whose mean wait is within `rate_reply_within_s`."
    )
    customer_messages: int = Field(ge=0, description="Customer messages in measurable sessions.")
    replies_within: int = Field(ge=0, description="Of those, answered within `rate_reply_within_s`.")
    unanswered_messages: int = Field(ge=0, description="Of those, never answered.")
    reply_rate_basis: ReplyRateBasis = Field(description="Whether reply_rate counts sessions or messages.")
    reply_rate: float | None = Field(
        description="3分钟平均回复率: reply_sessions_within / first_reply_sessions (basis session) or "
        "replies_within / customer_messages (basis message); None when the denominator is 0."
    )
    reply_pass: bool | None = Field(description="reply_rate ≥ reply_rate_min.")
    rated_sessions: int = Field(ge=0, description="Sessions with a satisfaction rating.")
    satisfied_sessions: int = Field(ge=0, description="Of those, rated `satisfied_min_stars` or more.")
    satisfaction_rate: float | None = Field(description="满意度; None without ratings.")
    satisfaction_pass: bool | None = Field(description="satisfaction_rate ≥ satisfaction_rate_min.")
    passed: bool | None = Field(description="Every rate that could be computed passes; None if none could.")

    def columns(self) -> dict[str, ColumnValue]:
        """Flat values for one CSV row."""
        return self.model_dump(mode="json")

    @property
    def reply_rate_counts(self) -> tuple[int, int]:
        """The 3分钟平均回复率's numerator and denominator, for the basis it was computed on."""
        if self.reply_rate_basis is ReplyRateBasis.session:
            return self.reply_sessions_within, self.first_reply_sessions
        return self.replies_within, self.customer_messages

    @classmethod
    def of_counts(cls, agent: str | None, shop: str | None, day: date | None, counts: Mapping[str, int],
                  thresholds: TimingThresholds) -> TimingGroupReport:
        """The report of a group from its counts (`TIMING_COUNTS`): every rate is a ratio of two of them."""
        basis = thresholds.reply_rate_basis
        rates = {
            "first_reply": (_share(counts["first_replies_within"], counts["first_reply_sessions"]),
                            thresholds.first_reply_rate_min),
            "reply": (_share(counts["reply_sessions_within"], counts["first_reply_sessions"])
                      if basis is ReplyRateBasis.session
                      else _share(counts["replies_within"], counts["customer_messages"]), thresholds.reply_rate_min),
            "satisfaction": (_share(counts["satisfied_sessions"], counts["rated_sessions"]),
                             thresholds.satisfaction_rate_min),
        }
        verdicts = {name: _passes(rate, low) for name, (rate, low) in rates.items()}
        known = [v for v in verdicts.values() if v is not None]
        return cls(
            agent=agent, shop=shop, day=day, **{name: counts[name] for name in TIMING_COUNTS},
            reply_rate_basis=basis,
            **{f"{name}_rate": rate for name, (rate, _) in rates.items()},
            **{f"{name}_pass": verdict for name, verdict in verdicts.items()},
            passed=all(known) if known else None,
        )


TIMING_COUNTS = ("sessions", "not_measurable_sessions", "first_reply_sessions", "first_replies_within",
                 "reply_sessions_within", "customer_messages", "replies_within", "unanswered_messages",
                 "rated_sessions", "satisfied_sessions")
"""The counts of a `TimingGroupReport`: those of two groups add up to those of the groups together."""


class _Identity(TypedDict):
    transcript_id: str
    agent: str | None
    shop: str | None
    day: date | None
    satisfaction: int | None
    satisfied: bool | None


def measure_session(
    transcript: Transcript,
    thresholds: TimingThresholds | None = None,
    calendar: ShopCalendar | None = None,
    *,
    satisfaction: int | None = None,
) -> SessionTiming:
    """Timing of one transcript; `satisfaction` is the customer's 1–5 star rating, if the export has one."""
    thresholds = thresholds or TimingThresholds()
    zone = (calendar or ShopCalendar()).zone(transcript.shop)
    roles = [t.role for t in transcript.turns]
    times = {
        n: _aware(t.time, zone)
        for n, t in enumerate(transcript.turns, start=1)
        if t.time is not None and t.role is not Role.system
    }
    customer = [n for n, role in enumerate(roles, start=1) if role is Role.customer]
    first_agent_turn = next((n for n, role in enumerate(roles, start=1) if role is Role.agent), None)
    first_timed_customer = next((n for n in customer if n in times), None)
    day_from = first_timed_customer or min(times, default=None)
    common = _Identity(
        transcript_id=transcript.id,
        agent=transcript.agent_id or (
            transcript.turns[first_agent_turn - 1].speaker if first_agent_turn is not None else None
        ),
        shop=transcript.shop,
        day=times[day_from].astimezone(zone).date() if day_from is not None else None,
        satisfaction=satisfaction,
        satisfied=satisfaction >= thresholds.satisfied_min_stars if satisfaction is not None else None,
    )
    problem = _unmeasurable(roles, times)
    if problem is not None:
        return SessionTiming(**common, not_measurable=problem, first_reply=FirstReply.not_measurable)

    # next_agent[n]: the first agent turn after turn n, found in one backward pass.
    next_agent: list[int | None] = [None] * (len(roles) + 1)
    for n in range(len(roles) - 1, -1, -1):
        next_agent[n] = n + 1 if roles[n] is Role.agent else next_agent[n + 1]
    # Waits and bursts are validated as plain fields with the session: cheaper than a model each.
    waits = [(n, next_agent[n], _seconds(times, n, next_agent[n])) for n in customer]
    bursts = []  # consecutive messages with the same next reply: (first turn, messages, reply turn, wait)
    for reply, group in groupby(waits, key=itemgetter(1)):
        (first_turn, _, wait), *rest = group  # the burst waits as long as its first message
        bursts.append((first_turn, 1 + len(rest), reply, wait))
    answered = [w for _, _, w in waits if w is not None]
    burst_answered = [w for _, _, _, w in bursts if w is not None]

    first = customer[0] if customer else None
    if first is None:
        status, first_agent, first_bot = FirstReply.no_customer_message, None, None
    else:
        first_agent = next_agent[first]
        first_bot = next((m for m in range(first + 1, len(roles) + 1) if roles[m - 1] is Role.bot and m in times), None)
        status = FirstReply.answered if first_agent is not None else FirstReply.no_human_reply
    first_s = _seconds(times, first, first_agent)
    mean_wait = fmean(answered) if answered else None
    return SessionTiming.model_validate({
        **common,
        "not_measurable": None,
        "first_reply": status,
        "first_response_s": first_s,
        "first_response_turn": first_agent,
        "first_bot_reply_s": _seconds(times, first, first_bot),
        "first_reply_within_greet_limit": _within(first_s, thresholds.greet_within_s, status),
        "first_reply_within_limit": _within(first_s, thresholds.first_reply_within_s, status),
        "message_waits": [{"turn": n, "reply_turn": reply, "wait_s": wait} for n, reply, wait in waits],
        "bursts": [
            {"first_turn": n, "messages": size, "reply_turn": reply, "wait_s": wait} for n, size, reply, wait in bursts
        ],
        "customer_messages": len(waits),
        "unanswered_messages": len(waits) - len(answered),
        "messages_within_reply_limit": sum(w <= thresholds.reply_within_s for w in answered),
        "messages_within_rate_limit": sum(w <= thresholds.rate_reply_within_s for w in answered),
        "mean_wait_s": mean_wait,
        "mean_wait_within_rate_limit": _within(mean_wait, thresholds.rate_reply_within_s, status),
        "max_wait_s": max(answered, default=None),
        "burst_mean_wait_s": fmean(burst_answered) if burst_answered else None,
        "burst_max_wait_s": max(burst_answered, default=None),
    })


def _aware(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=zone)


def _unmeasurable(roles: list[Role], times: Mapping[int, datetime]) -> str | None:
    """Why the transcript's times cannot be trusted, or None; `roles` are its turns' roles in order."""
    needed = [n for n, role in enumerate(roles, start=1) if role in (Role.customer, Role.agent)]
    missing = [n for n in needed if n not in times]
    if missing and len(missing) == len(needed):
        return "no customer or agent turn has a timestamp"
    if missing:
        first = missing[0]
        return f"{len(missing)} of {len(needed)} customer/agent turns lack a timestamp (first: turn {first})"
    ordered = sorted(times)
    for before, after in pairwise(ordered):
        if times[after] < times[before]:
            return (
                f"turn {after} ({times[after].isoformat()}) is earlier than turn {before} "
                f"({times[before].isoformat()}): timestamps run backwards"
            )
    return None


def _seconds(times: Mapping[int, datetime], start: int | None, end: int | None) -> float | None:
    return (times[end] - times[start]).total_seconds() if start is not None and end is not None else None


def _within(seconds: float | None, limit: float, status: FirstReply) -> bool | None:
    """A reply time is within the limit, late, missing (False: the agent never replied) or not applicable (None)."""
    if status is FirstReply.no_human_reply:
        return False
    return seconds <= limit if seconds is not None else None


def _share(part: int | None, whole: int | None) -> float | None:
    return part / whole if part is not None and whole else None


def _passes(rate: float | None, minimum: float) -> bool | None:
    # The tolerance keeps 17/20 == 0.85 a pass whatever the float rounding.
    return rate >= minimum - 1e-9 if rate is not None else None


SESSION_FIGURES = ("timing_not_measurable", "first_reply_status", "first_reply_within_limit", "customer_messages",
                   "unanswered_messages", "mean_wait_s", "satisfaction_stars", "messages_within_rate_limit")
"""What `session_counts` reads of each session: its check columns (`SessionTiming.columns`) and one count."""


def session_counts(sessions: pd.DataFrame, thresholds: TimingThresholds) -> pd.DataFrame:
    """What each session adds to each of the `TIMING_COUNTS` (a column each, a row per session): the counts of a
    group are the sums of its sessions'. A session is a row with the `SESSION_FIGURES` columns (missing: NaN or
    None); `aggregate_timing` and the summaries of a run's stored figures count through here."""
    import numpy as np
    import pandas as pd

    measured = sessions["timing_not_measurable"].isna().to_numpy()
    status = sessions["first_reply_status"].to_numpy(dtype=object)
    eligible = measured & (status != FirstReply.no_customer_message.value)
    mean_wait = pd.to_numeric(sessions["mean_wait_s"], errors="coerce").to_numpy(dtype=float)
    stars = pd.to_numeric(sessions["satisfaction_stars"], errors="coerce").to_numpy(dtype=float)

    def measured_count(name: str) -> np.ndarray:
        values = pd.to_numeric(sessions[name], errors="coerce").to_numpy(dtype=float)
        return np.where(measured, np.nan_to_num(values), 0).astype(np.int64)

    return pd.DataFrame({
        "sessions": 1,
        "not_measurable_sessions": ~measured,
        "first_reply_sessions": eligible,
        "first_replies_within": eligible & sessions["first_reply_within_limit"].eq(True).to_numpy(),
        # From the mean wait, not the stored flag: records made before the flag existed count too (`_within`).
        "reply_sessions_within": eligible & (status != FirstReply.no_human_reply.value)
        & (mean_wait <= thresholds.rate_reply_within_s),
        "customer_messages": measured_count("customer_messages"),
        "replies_within": measured_count("messages_within_rate_limit"),
        "unanswered_messages": measured_count("unanswered_messages"),
        "rated_sessions": ~np.isnan(stars),
        "satisfied_sessions": stars >= thresholds.satisfied_min_stars,
    }, index=sessions.index).astype(np.int64)


def aggregate_timing(
    sessions: Iterable[SessionTiming], thresholds: TimingThresholds | None = None
) -> list[TimingGroupReport]:
    """Group sessions by (agent, shop, day) and compute the Douyin-style rates, sorted with unknowns last."""
    import pandas as pd

    thresholds = thresholds or TimingThresholds()
    groups: dict[tuple[str | None, str | None, date | None], list[SessionTiming]] = {}
    for s in sessions:
        groups.setdefault((s.agent, s.shop, s.day), []).append(s)
    reports = []
    for (agent, shop, day), members in sorted(groups.items(), key=lambda item: _sort_key(*item[0])):
        figures = pd.DataFrame([s.columns() | {"messages_within_rate_limit": s.messages_within_rate_limit}
                                for s in members], columns=list(SESSION_FIGURES))
        counts = session_counts(figures, thresholds).sum()
        reports.append(TimingGroupReport.of_counts(agent, shop, day, {k: int(counts[k]) for k in TIMING_COUNTS},
                                                   thresholds))
    return reports


def _sort_key(agent: str | None, shop: str | None, day: date | None) -> tuple[object, ...]:
    return (agent is None, agent or "", shop is None, shop or "", day is None, day or date.min)
