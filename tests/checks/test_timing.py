"""Tests for pipeline/checks/timing.py: hand-built transcripts with hand-derived times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from pipeline.checks.timing import (
    ReplyRateBasis,
    SessionTiming,
    ShopCalendar,
    TimingThresholds,
    aggregate_timing,
    measure_session,
)
from pipeline.models.checks import FirstReply
from pipeline.models.transcript import Role, Transcript, Turn

CST = timezone(timedelta(hours=8))
T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=CST)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def chat(*turns: tuple[Role, datetime | None, str], **meta: str) -> Transcript:
    return Transcript(id=meta.pop("id", "t1"), turns=[Turn(role=r, time=t, text=x) for r, t, x in turns], **meta)


C, A, B, S = Role.customer, Role.agent, Role.bot, Role.system


def test_full_session_with_bot_double_message_and_unanswered_tail() -> None:
    t = chat(
        (C, at(0), "在吗"),
        (B, at(2), "您好,客服马上到"),
        (A, at(8), "您好,欢迎光临"),
        (C, at(60), "这款有货吗"),
        (S, None, "系统:客户正在输入"),
        (C, at(90), "L码"),
        (A, at(190), "亲,L码有货的呢"),
        (C, at(300), "好的"),
        agent_id="kefu_01",
        shop="好色珠宝",
    )
    s = measure_session(t)
    assert s.not_measurable is None
    assert s.first_reply is FirstReply.answered
    # The bot at +2 s is not a reply; the first human reply is turn 3 at +8 s.
    assert (s.first_response_s, s.first_response_turn, s.first_bot_reply_s) == (8.0, 3, 2.0)
    assert s.first_reply_within_greet_limit is True and s.first_reply_within_limit is True
    # Each customer message waits from itself: turn 4 waits 190-60 = 130 s, turn 6 waits 190-90 = 100 s.
    assert [(w.turn, w.reply_turn, w.wait_s) for w in s.message_waits] == [
        (1, 3, 8.0),
        (4, 7, 130.0),
        (6, 7, 100.0),
        (8, None, None),
    ]
    # Bursts share a reply and are timed from their first message; the system turn does not split one.
    assert [(b.first_turn, b.messages, b.wait_s) for b in s.bursts] == [
        (1, 1, 8.0),
        (4, 2, 130.0),
        (8, 1, None),
    ]
    assert s.customer_messages == 4 and s.unanswered_messages == 1
    assert s.mean_wait_s == pytest.approx((8 + 130 + 100) / 3)
    assert s.mean_wait_within_rate_limit is True  # 79.3 s ≤ 180 s: counts for the per-session 3-minute rate
    assert s.max_wait_s == 130.0
    assert s.burst_mean_wait_s == pytest.approx((8 + 130) / 2) and s.burst_max_wait_s == 130.0
    # Within 60 s: only the 8 s wait -> 1/4. Within 180 s: 8, 130, 100 -> 3/4 (the unanswered one counts).
    assert s.share_within_reply_limit == 0.25 and s.share_within_rate_limit == 0.75
    assert (s.agent, s.shop, s.day) == ("kefu_01", "好色珠宝", date(2024, 5, 1))


def test_slow_first_reply_fails_both_limits() -> None:
    s = measure_session(chat((C, at(0), "在吗"), (A, at(121), "在的")))
    assert s.first_response_s == 121.0
    assert s.first_reply_within_greet_limit is False and s.first_reply_within_limit is False


def test_thresholds_are_configurable() -> None:
    t = chat((C, at(0), "在吗"), (A, at(25), "在的"))
    assert measure_session(t).first_reply_within_greet_limit is False
    assert measure_session(t, TimingThresholds(greet_within_s=30)).first_reply_within_greet_limit is True


def test_agent_turns_before_the_customer_are_not_replies() -> None:
    t = chat(
        (A, at(-300), "您好,欢迎光临(转接自售前)"),
        (A, at(-10), "亲,有什么可以帮您"),
        (C, at(0), "我要退货"),
        (A, at(30), "好的亲"),
    )
    s = measure_session(t)
    assert (s.first_response_s, s.first_response_turn) == (30.0, 4)
    assert all(w.wait_s is not None and w.wait_s >= 0 for w in s.message_waits)


def test_only_a_bot_answered() -> None:
    s = measure_session(chat((C, at(0), "在吗"), (B, at(1), "自动回复:客服不在线")))
    assert s.first_reply is FirstReply.no_human_reply
    assert s.first_response_s is None and s.first_bot_reply_s == 1.0
    # No human reply is a miss, not "unknown".
    assert s.first_reply_within_limit is False and s.unanswered_messages == 1


def test_no_customer_message() -> None:
    s = measure_session(chat((A, at(0), "亲,您的包裹已发出")))
    assert s.first_reply is FirstReply.no_customer_message
    assert s.first_reply_within_limit is None and s.customer_messages == 0
    assert s.share_within_rate_limit is None and s.mean_wait_s is None


def test_no_timestamps_is_not_measurable_never_zero() -> None:
    s = measure_session(chat((C, None, "在吗"), (A, None, "在的")))
    assert s.not_measurable == "no customer or agent turn has a timestamp"
    assert s.first_reply is FirstReply.not_measurable
    assert s.first_response_s is None and s.customer_messages is None and s.mean_wait_s is None
    assert s.day is None
    assert s.columns()["first_response_s"] is None


def test_some_timestamps_missing_is_not_measurable() -> None:
    s = measure_session(chat((C, at(0), "在吗"), (A, None, "在的"), (C, at(50), "好")))
    assert s.not_measurable is not None and "turn 2" in s.not_measurable
    assert s.first_response_s is None
    # The day is still known from the customer's first message, so the session lands in its group.
    assert s.day == date(2024, 5, 1)


def test_bot_without_timestamp_only_loses_the_bot_time() -> None:
    s = measure_session(chat((C, at(0), "在吗"), (B, None, "自动回复"), (A, at(5), "在的")))
    assert s.not_measurable is None and s.first_response_s == 5.0 and s.first_bot_reply_s is None


def test_backwards_timestamps_are_not_measurable() -> None:
    s = measure_session(chat((C, at(0), "在吗"), (A, at(-5), "在的")))
    assert s.not_measurable is not None and "backwards" in s.not_measurable
    assert s.first_response_s is None


def test_timestamps_in_different_zones() -> None:
    # 10:00:00 in Beijing is 02:00:00 UTC; the reply at 02:00:45 UTC came 45 s later.
    t = chat(
        (C, datetime(2024, 5, 1, 10, 0, 0, tzinfo=CST), "在吗"),
        (A, datetime(2024, 5, 1, 2, 0, 45, tzinfo=UTC), "在的"),
    )
    assert measure_session(t).first_response_s == 45.0


def test_naive_timestamps_are_read_in_the_shop_zone() -> None:
    # A naive 10:00:00 in Shanghai is 02:00:00 UTC, so an aware 02:00:20 UTC reply is 20 s later.
    t = chat((C, datetime(2024, 5, 1, 10, 0, 0), "在吗"), (A, datetime(2024, 5, 1, 2, 0, 20, tzinfo=UTC), "在的"))
    assert measure_session(t).first_response_s == 20.0


def test_day_is_taken_in_the_shop_zone() -> None:
    # 16:30 UTC on 1 May is 00:30 on 2 May in Shanghai and 09:30 on 1 May in Los Angeles.
    start = datetime(2024, 5, 1, 16, 30, tzinfo=UTC)
    t = chat((C, start, "在吗"), (A, start + timedelta(seconds=5), "在的"), shop="us_store")
    assert measure_session(t).day == date(2024, 5, 2)
    calendar = ShopCalendar(shop_timezones={"us_store": "America/Los_Angeles"})
    assert measure_session(t, calendar=calendar).day == date(2024, 5, 1)


def test_unknown_zone_is_rejected() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        ShopCalendar(shop_timezones={"x": "Mars/Olympus"})


def session(agent: str, first_wait: float | None, *, day: int = 1, rating: int | None = None) -> SessionTiming:
    """One customer message answered after `first_wait` seconds (None: the reply has no timestamp)."""
    start = datetime(2024, 5, day, 10, 0, tzinfo=CST)
    reply = None if first_wait is None else start + timedelta(seconds=first_wait)
    t = chat((C, start, "在吗"), (A, reply, "在的"), agent_id=agent, shop="店")
    return measure_session(t, satisfaction=rating)


def test_group_rates_and_pass_fail() -> None:
    # Agent a: 17 of 20 sessions answered within 120 s -> 17/20 = 0.85, exactly the threshold: pass.
    # The 3 slow ones wait 200 s, over 180 s, so the 3-minute rate is also 17/20 = 0.85 >= 0.80: pass.
    # Ratings 5,4,3,5,5 -> 4 satisfied of 5 = 0.80: pass. One extra session is not measurable.
    a = [session("a", 30)] * 17 + [session("a", 200)] * 3
    a[0] = session("a", 30, rating=5)
    a[1] = session("a", 30, rating=4)
    a[2] = session("a", 30, rating=3)
    a[3] = session("a", 30, rating=5)
    a[4] = session("a", 30, rating=5)
    a.append(session("a", None))
    # Agent b: 16 of 20 within 120 s -> 0.80 < 0.85: fail. The 4 slow ones wait 150 s (under 180 s),
    # so the 3-minute rate is 20/20 = 1.0: pass. No ratings: satisfaction not applicable.
    b = [session("b", 30)] * 16 + [session("b", 150)] * 4
    reports = aggregate_timing(b + a)
    assert [(r.agent, r.shop, r.day) for r in reports] == [
        ("a", "店", date(2024, 5, 1)),
        ("b", "店", date(2024, 5, 1)),
    ]
    ra, rb = reports
    assert (ra.sessions, ra.not_measurable_sessions, ra.first_reply_sessions) == (21, 1, 20)
    assert (ra.first_replies_within, ra.first_reply_rate, ra.first_reply_pass) == (17, 0.85, True)
    # Per session (the default): each has one message, so 17 of 20 sessions have a mean wait ≤ 180 s.
    assert (ra.reply_rate_basis, ra.reply_sessions_within, ra.reply_rate, ra.reply_pass) == ("session", 17, 0.85, True)
    assert (ra.customer_messages, ra.replies_within) == (20, 17)
    assert (ra.rated_sessions, ra.satisfied_sessions, ra.satisfaction_rate) == (5, 4, 0.8)
    assert ra.satisfaction_pass is True and ra.passed is True
    assert (rb.first_reply_rate, rb.first_reply_pass, rb.reply_rate, rb.reply_pass) == (0.8, False, 1.0, True)
    assert rb.satisfaction_rate is None and rb.satisfaction_pass is None and rb.passed is False
    assert rb.columns()["day"] == "2024-05-01"


def test_groups_split_by_day_and_sessions_without_times_are_their_own_group() -> None:
    no_times = measure_session(chat((C, None, "在吗"), (A, None, "在的"), agent_id="a", shop="店"))
    reports = aggregate_timing([session("a", 30, day=1), session("a", 30, day=2), no_times])
    assert [r.day for r in reports] == [date(2024, 5, 1), date(2024, 5, 2), None]
    unknown = reports[-1]
    assert unknown.first_reply_rate is None and unknown.reply_rate is None and unknown.passed is None


def test_group_thresholds_are_configurable() -> None:
    reports = aggregate_timing([session("a", 30, rating=3)], TimingThresholds(satisfied_min_stars=3))
    assert reports[0].satisfaction_rate == 1.0


def test_session_columns_are_flat() -> None:
    cols = measure_session(chat((C, at(0), "在吗"), (A, at(8), "在的"))).columns()
    assert cols["first_response_s"] == 8.0 and cols["first_reply_status"] == "answered"
    assert all(v is None or isinstance(v, str | int | float | bool) for v in cols.values())


def test_three_minute_rate_per_session_is_the_default_and_pooled_messages_an_option() -> None:
    # Session x: 4 messages, waits 10, 10, 10, 400 s: mean 107.5 s ≤ 180 s, so the session counts;
    # 3 of its 4 messages are within 180 s. Session y: 1 message, wait 300 s: the session misses, 0 of 1.
    # Session z: the agent never replies: a miss, and its 1 message is unanswered.
    x = chat((C, at(0), "q1"), (A, at(10), "a1"), (C, at(20), "q2"), (A, at(30), "a2"), (C, at(40), "q3"),
             (A, at(50), "a3"), (C, at(60), "q4"), (A, at(460), "a4"), agent_id="a", shop="店", id="x")
    y = chat((C, at(0), "q"), (A, at(300), "a"), agent_id="a", shop="店", id="y")
    z = chat((C, at(0), "q"), agent_id="a", shop="店", id="z")
    sessions = [measure_session(t) for t in (x, y, z)]
    assert [s.mean_wait_within_rate_limit for s in sessions] == [True, False, False]
    (per_session,) = aggregate_timing(sessions)
    # Sessions: 1 of 3 (x) -> 0.3333 < 0.80: fail.
    assert per_session.reply_rate_counts == (1, 3) and per_session.reply_rate == pytest.approx(1 / 3)
    (pooled,) = aggregate_timing(sessions, TimingThresholds(reply_rate_basis=ReplyRateBasis.message))
    # Messages: 3 (x) + 0 (y) + 0 (z) of 4 + 1 + 1 = 3/6 = 0.5.
    assert pooled.reply_rate_counts == (3, 6) and pooled.reply_rate == 0.5 and pooled.reply_pass is False


def test_satisfied_per_session() -> None:
    assert [session("a", 30, rating=r).satisfied for r in (5, 4, 3, 1, None)] == [True, True, False, False, None]
    untimed = measure_session(chat((C, None, "在吗"), (A, None, "在的")), satisfaction=5)
    assert untimed.not_measurable and untimed.satisfied is True  # a rating needs no timestamps
