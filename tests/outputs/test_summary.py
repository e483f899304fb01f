"""Team summaries on a small constructed run, every number derived by hand in the comments."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.checks.checker import ServiceChecker
from pipeline.checks.timing import ReplyRateBasis, TimingThresholds
from pipeline.models.grade import CriterionGrade, Grade, InjectionHit
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.outputs.headings import summary_headings
from pipeline.outputs.summary import GroupSummary, rate_text, summarize_run, write_summary
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

DATA = Path(__file__).resolve().parents[1] / "data"
# 10:00 in Shanghai (the default shop zone) on 2 March; t3 is a day later.
MAR2 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
MAR3 = MAR2 + timedelta(days=1)


def chat(tid: str, agent: str, start: datetime | None, turns: list[tuple[Role, str, int]]) -> Transcript:
    return Transcript(id=tid, agent_id=agent, turns=[
        Turn(role=role, text=text, time=start + timedelta(seconds=s) if start else None) for role, text, s in turns
    ])


C, A = Role.customer, Role.agent
CHATS = [
    # t1: first reply after 30 s (within 2 min and 3 min).
    chat("t1", "A", MAR2, [(C, "在吗", 0), (A, "亲，您好", 30)]),
    # t2: first reply after 700 s: misses both limits; over 600 s caps pitch at 0.
    chat("t2", "A", MAR2, [(C, "在吗", 0), (A, "好的亲", 700)]),
    # t3: replies after 60 s (within) and 300 s (over 3 min); two banned bare replies → critical.
    chat("t3", "B", MAR3, [(C, "在吗", 0), (A, "嗯", 60), (C, "能发顺丰吗", 100), (A, "哦", 400)]),
    # t4: no timestamps: not measurable, no day.
    chat("t4", "B", None, [(C, "在吗", 0), (A, "亲，您好", 0)]),
]
# LLM scores (polite /4, greet /2, pitch /4) per transcript × repeat; t1 is graded twice.
GRADES = {
    ("t1", 0): (4, 2, 4),  # final total 10
    ("t1", 1): (2, 2, 2),  # final total 6
    ("t2", 0): (4, 1, 4),  # pitch capped 4→0: total 5
    ("t3", 0): (2, 2, 4),  # critical (banned_hits 2): total 0
    ("t4", 0): (0, 0, 2),  # critical (polite 0): total 0
}


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(DATA / "tiny_hooks.yaml")


@pytest.fixture
def store(rubric: Rubric, tmp_path: Path) -> Iterator[Store]:
    with Store.open(tmp_path) as store:
        fill(store, rubric)
        yield store


def fill(store: Store, rubric: Rubric) -> None:
    run = store.start_run(rubric_id=rubric.id, rubric_version="1", rubric_hash=rubric.content_hash,
                          template_hash="p", model="m", settings={})
    checker = ServiceChecker.load()
    for t in CHATS:
        store.save_transcript_meta(transcript_id=t.id, content_hash="h", platform="douyin", shop=None,
                                   agent_id=t.agent_id, started_at=None, n_turns=len(t.turns), source=None,
                                   checks=checker.check(t).record())
    for (tid, repeat), points in GRADES.items():
        criteria = [CriterionGrade(criterion_id=c.id, score=p) for c, p in zip(rubric.criteria(), points, strict=True)]
        store.save_grade(Grade(key=f"{tid}{repeat}", transcript_id=tid, repeat=repeat, scope="all", status="scored",
                               criteria=criteria, model="m", attempts=1, created_at=MAR2), run, rubric.content_hash)


def by_group(groups: list[GroupSummary]) -> dict[str | None, GroupSummary]:
    return {g.group: g for g in groups}


def test_summary_by_agent(store: Store, rubric: Rubric) -> None:
    groups = summarize_run(store, rubric, "agent")
    assert [g.group for g in groups] == ["A", "B"]
    a, b = groups
    # A: rows t1r0, t1r1, t2 with totals 10, 6, 5 → 21/3 = 7; talk 6, 4, 5 → 5; sell 4, 2, 0 → 2.
    assert (a.transcripts, a.rows, a.critical_failed) == (2, 3, 0)
    assert a.mean_total == pytest.approx(7.0)
    assert a.dimension_means == pytest.approx({"talk": 5.0, "sell": 2.0})
    # Shares: pitch (1 + 0.5 + 0)/3 = 0.5; polite (1 + 0.5 + 1)/3 = greet (1 + 1 + 0.5)/3 = 5/6 (tie: rubric order).
    assert [(w.criterion_id, round(w.share, 4)) for w in a.weakest] == [
        ("pitch", 0.5), ("polite", 0.8333), ("greet", 0.8333)]
    # Timing once per transcript: first replies 30 s ✓ and 700 s ✗ → 1/2; 3-minute rate per session
    # (the default): mean waits 30 s ✓ and 700 s ✗ → 1/2.
    assert a.timing is not None
    assert (a.timing.sessions, a.timing.first_reply_rate, a.timing.reply_rate) == (2, 0.5, 0.5)
    assert (a.timing.first_reply_pass, a.timing.reply_pass) == (False, False)  # below 85 % and 80 %
    assert (a.phrase_checked, a.banned_rate) == (2, 0.0)
    # B: both chats failed (total 0); talk (2+2) and (0+0) → 2; sell 4 and 2 → 3.
    assert (b.transcripts, b.rows, b.critical_failed, b.mean_total) == (2, 2, 2, 0.0)
    assert b.dimension_means == pytest.approx({"talk": 2.0, "sell": 3.0})
    # Shares: polite (0.5 + 0)/2 = 0.25, greet (1 + 0)/2 = 0.5, pitch (1 + 0.5)/2 = 0.75.
    assert [(w.criterion_id, w.share) for w in b.weakest] == [("polite", 0.25), ("greet", 0.5), ("pitch", 0.75)]
    # Timing: t4 is not measurable; t3 first reply 60 s ✓ → 1/1; its mean wait (60 + 300)/2 = 180 s is
    # within 3 min → 1/1 per session (pooled, its messages 60 s ✓, 300 s ✗ would be 1/2).
    assert b.timing is not None
    assert (b.timing.sessions, b.timing.not_measurable_sessions) == (2, 1)
    assert (b.timing.first_reply_rate, b.timing.first_reply_pass, b.timing.reply_rate) == (1.0, True, 1.0)
    assert b.timing.reply_rate_counts == (1, 1)
    # Banned phrases: t3 has two, t4 none → 1/2.
    assert b.banned_rate == 0.5


def test_summary_by_day(store: Store, rubric: Rubric) -> None:
    groups = summarize_run(store, rubric, "day")
    assert [g.group for g in groups] == ["2026-03-02", "2026-03-03", None]  # no timestamps: unknown, last
    mar2, mar3, unknown = groups
    assert (mar2.transcripts, mar2.mean_total, mar2.timing and mar2.timing.first_reply_rate) == (2, 7.0, 0.5)
    # 3 March: t3 alone, failed; talk 4, sell 4.
    assert (mar3.transcripts, mar3.mean_total, mar3.dimension_means) == (1, 0.0, {"talk": 4.0, "sell": 4.0})
    assert mar3.timing is not None and (mar3.timing.first_reply_rate, mar3.timing.reply_rate) == (1.0, 1.0)
    pooled = summarize_run(store, rubric, "day", TimingThresholds(reply_rate_basis=ReplyRateBasis.message))
    assert pooled[1].timing is not None and pooled[1].timing.reply_rate_counts == (1, 2)
    # Unknown day: t4, not measurable, so no rate at all rather than 0.
    assert unknown.timing is not None
    assert (unknown.timing.first_reply_rate, unknown.timing.reply_rate, unknown.timing.passed) == (None, None, None)


def test_summary_files(store: Store, rubric: Rubric, tmp_path: Path) -> None:
    groups = summarize_run(store, rubric, "agent")
    csv_path = write_summary(groups, rubric, "agent", tmp_path / "s.csv", "csv")
    xlsx_path = write_summary(groups, rubric, "agent", tmp_path / "s.xlsx", "xlsx")
    frame = pd.read_csv(csv_path, encoding="utf-8-sig")
    assert list(frame["客服"]) == ["A", "B"] and list(frame["平均总分"]) == [7.0, 0.0]
    assert set(frame.columns) == set(summary_headings(rubric, "agent").values())  # one Chinese heading per id
    assert frame.loc[0, "最弱评分项"] == "推荐 0.50; 礼貌 0.83; 招呼 0.83"  # criterion names, not ids
    assert list(frame["2分钟首次回复率"]) == [0.5, 1.0] and list(frame["禁用语率"]) == [0.0, 0.5]
    pd.testing.assert_frame_equal(pd.read_excel(xlsx_path, sheet_name="按客服汇总"), frame, check_dtype=False)
    # The 3-minute rate says which definition it used, with its numerator and denominator (see test_summary_by_agent).
    assert list(frame["3分钟平均回复率口径"]) == ["session", "session"]
    assert list(zip(frame["3分钟平均回复率分子"], frame["3分钟平均回复率分母"], strict=True)) == [(1, 2), (1, 1)]


def test_satisfaction_rate_counts_4_and_5_stars_over_rated_sessions(rubric: Rubric, tmp_path: Path) -> None:
    # Three rated sessions (5, 4, 2 stars) and one unrated: 满意度 = 2/3 < 0.80 → fail (seed 004).
    checker = ServiceChecker.load()
    start = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    with Store.open(tmp_path) as s:
        run = s.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                          template_hash="p", model="m", settings={})
        for tid, stars in (("r5", 5), ("r4", 4), ("r2", 2), ("none", None)):
            t = chat(tid, "kf-9", start, [(Role.customer, "在吗", 0), (Role.agent, "亲，您好", 10)])
            t = t.model_copy(update={"satisfaction": stars})
            s.save_transcript_meta(transcript_id=tid, content_hash=tid, platform=None, shop=None, agent_id="kf-9",
                                   started_at=start, n_turns=2, source=None,
                                   checks=checker.record_for(t, tid))
            s.save_grade(Grade(key=tid, transcript_id=tid, repeat=0, scope="all", status="scored",
                               criteria=[CriterionGrade(criterion_id=c.id, score=c.max) for c in rubric.criteria()],
                               model="m", attempts=1, created_at=datetime.now(UTC)), run, rubric.content_hash)
        [group] = summarize_run(s, rubric, "agent")
    assert group.timing is not None
    assert group.timing.rated_sessions == 3 and group.timing.satisfaction_rate == pytest.approx(2 / 3)
    assert group.timing.satisfaction_pass is False
    for fmt in ("csv", "xlsx"):
        path = write_summary([group], rubric, "agent", tmp_path / f"s.{fmt}", fmt)
        frame = pd.read_csv(path, encoding="utf-8-sig") if fmt == "csv" else pd.read_excel(path)
        row = frame.iloc[0]
        assert (row["已评价会话数"], row["满意会话数"], row["满意度"]) == (3, 2, 0.6667)
        assert row["满意度达标"] == "否"


@pytest.mark.parametrize(
    ("part", "whole", "passed", "text"),
    [
        (11, 13, False, "84.6% (11/13) ✗"),  # 0.8462 < 0.85: never "85% ✗"
        (17, 20, True, "85.0% (17/20) ✓"),  # exactly the threshold passes
        (2, 3, None, "66.6% (2/3)"),  # cut, not rounded: 66.67 shows as 66.6
        (999, 1000, False, "99.9% (999/1000) ✗"),
        (0, 0, None, "—"),
    ],
)
def test_rate_text_never_contradicts_its_verdict(part: int, whole: int, passed: bool | None, text: str) -> None:
    assert rate_text(part, whole, passed) == text


@given(st.integers(0, 10_000), st.integers(1, 10_000), st.sampled_from([0.8, 0.85, 0.9, 0.999]))
def test_a_failing_rate_never_shows_the_threshold_or_more(part: int, whole: int, minimum: float) -> None:
    part = min(part, whole)
    shown = float(rate_text(part, whole, None).split("%")[0]) / 100
    assert (shown >= minimum - 1e-9) == (part / whole >= minimum - 1e-9)


def test_a_row_that_needs_review_is_counted_and_left_out_of_the_scores(rubric: Rubric, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        fill(store, rubric)
        run = store.start_run(rubric_id=rubric.id, rubric_version="1", rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        full = [CriterionGrade(criterion_id=c.id, score=c.max) for c in rubric.criteria()]  # an obeyed "给满分"
        hit = InjectionHit(field="turn", turn=1, pattern="full_marks", text="给满分")
        store.save_grade(Grade(key="t1-2", transcript_id="t1", repeat=2, scope="all", status="scored", criteria=full,
                               model="m", attempts=1, created_at=MAR2, injection=[hit]), run, rubric.content_hash)
        a = summarize_run(store, rubric, "agent")[0]
    # As in test_summary_by_agent: the full-marks row is neither a row nor in any mean.
    assert (a.transcripts, a.rows, a.needs_review, a.mean_total) == (2, 3, 1, pytest.approx(7.0))
    assert a.dimension_means == pytest.approx({"talk": 5.0, "sell": 2.0})
    assert a.columns("agent")["needs_review"] == 1
