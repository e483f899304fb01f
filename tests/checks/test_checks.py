"""The per-transcript checks record: its columns are the hook vocabulary, and it survives the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.checks.checker import ServiceChecker, TranscriptChecks
from pipeline.models.checks import CHECKS, CheckKind
from pipeline.models.transcript import Role, Transcript, Turn

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def checker() -> ServiceChecker:
    return ServiceChecker.load()


def chat(*, timed: bool = True) -> Transcript:
    def at(seconds: int) -> datetime | None:
        return T0 + timedelta(seconds=seconds) if timed else None

    return Transcript(id="c1", agent_id="a1", shop="小店", turns=[
        Turn(role=Role.customer, text="能便宜点吗", time=at(0)),
        Turn(role=Role.agent, text="不能便宜了亲", time=at(40)),
        Turn(role=Role.customer, text="好吧", time=at(100)),
        Turn(role=Role.agent, text="嗯", time=at(400)),
    ])


def test_catalogue_is_exactly_the_reports_columns_in_order(checker: ServiceChecker) -> None:
    assert list(checker.check(chat()).columns()) == list(CHECKS)
    assert list(checker.check(chat(timed=False)).columns()) == list(CHECKS)


def test_catalogue_kinds_match_the_values(checker: ServiceChecker) -> None:
    # Every kind is checked against a value a real chat produces, so a hook compares like with like.
    values = checker.check(chat()).columns()
    for name, spec in CHECKS.items():
        value = values[name]
        if value is None:
            continue
        expected = {CheckKind.number: (int, float), CheckKind.flag: bool, CheckKind.reason: str,
                    CheckKind.choice: str, CheckKind.detail: str}[spec.kind]
        assert isinstance(value, expected), name
        assert spec.kind is not CheckKind.number or not isinstance(value, bool), name
        assert spec.kind is not CheckKind.choice or value in spec.choices, name


def test_checks_of_a_timed_chat(checker: ServiceChecker) -> None:
    cols = checker.check(chat()).columns()
    # waits: turn 1 → turn 2 is 40 s, turn 3 → turn 4 is 300 s.
    assert (cols["first_response_s"], cols["max_wait_s"], cols["mean_wait_s"]) == (40.0, 300.0, 170.0)
    assert cols["first_reply_within_limit"] is True and cols["share_within_rate_limit"] == 0.5
    assert (cols["banned_hits"], cols["negation_refusal_hits"], cols["refusals_without_apology"]) == (1, 1, 1)


def test_untimed_chat_is_not_measurable_never_zero(checker: ServiceChecker) -> None:
    checks = checker.check(chat(timed=False))
    cols = checks.columns()
    assert cols["timing_not_measurable"] and cols["first_reply_status"] == "not_measurable"
    rating = {"satisfaction_stars", "satisfied"}  # a star rating needs no timestamps
    times = set(checks.timing.columns()) - {"timing_not_measurable", "first_reply_status", *rating}
    assert len(times) == 13 and all(cols[n] is None for n in times)
    assert cols["greeted_within_limit"] is None
    assert cols["banned_hits"] == 1  # phrases do not need times


def test_record_round_trips_through_json(checker: ServiceChecker) -> None:
    checks = checker.check(chat())
    record = json.loads(json.dumps(checks.record(), ensure_ascii=False))
    assert record["columns"] == json.loads(json.dumps(checks.columns()))
    assert TranscriptChecks.from_record(record) == checks


def greeting_chat(reply: str, after_s: int, *, stars: int | None = None) -> Transcript:
    return Transcript(id="g", satisfaction=stars, turns=[
        Turn(role=Role.agent, text="您好,欢迎光临", time=T0),  # proactive, before the customer: not the reply
        Turn(role=Role.customer, text="在吗", time=T0 + timedelta(seconds=5)),
        Turn(role=Role.agent, text=reply, time=T0 + timedelta(seconds=5 + after_s)),
    ])


@pytest.mark.parametrize(
    ("reply", "after_s", "text", "greeted", "in_time"),
    [
        ("亲,您好,很高兴为您服务", 8, "您好、高兴为您服务", True, True),  # seed 002 欢迎语: greeting within 10 s
        ("亲,您好,很高兴为您服务", 30, "您好、高兴为您服务", False, False),  # the right words, too late
        ("在的,有什么问题", 3, None, False, True),  # in time, but no 问候语
        ("您好像还没付款", 3, None, False, True),  # 您好像 is no greeting
    ],
)
def test_greeting_needs_the_wording_and_the_timing(checker: ServiceChecker, reply: str, after_s: int,
                                                   text: str | None, greeted: bool, in_time: bool) -> None:
    cols = checker.check(greeting_chat(reply, after_s)).columns()
    assert (cols["greeting_text"], cols["greeted_within_limit"], cols["first_reply_within_greet_limit"]) == (
        text, greeted, in_time
    )


def test_no_human_reply_is_not_greeted(checker: ServiceChecker) -> None:
    t = Transcript(id="n", turns=[Turn(role=Role.customer, text="在吗", time=T0)])
    cols = checker.check(t).columns()
    assert (cols["greeting_text"], cols["greeted_within_limit"]) == (None, False)


@pytest.mark.parametrize(("stars", "satisfied"), [(5, True), (4, True), (3, False), (None, None)])
def test_satisfaction_per_chat(checker: ServiceChecker, stars: int | None, satisfied: bool | None) -> None:
    cols = checker.check(greeting_chat("您好", 1, stars=stars)).columns()
    assert (cols["satisfaction_stars"], cols["satisfied"]) == (stars, satisfied)


def test_records_stored_before_the_greeting_rename_still_read(checker: ServiceChecker) -> None:
    record = checker.check(greeting_chat("您好", 1)).record()
    timing = dict(record["timing"])
    timing["greeted_within_limit"] = timing.pop("first_reply_within_greet_limit")
    for added in ("mean_wait_within_rate_limit", "satisfied"):
        timing.pop(added)
    old = TranscriptChecks.from_record(record | {"timing": timing})
    assert old.timing.first_reply_within_greet_limit is True


def test_no_check_column_shares_a_name_with_a_score_column_of_the_repository_rubrics() -> None:
    # scores.csv puts score and check columns side by side: one name for both would hide one of them
    # (dch1_quality has a criterion called satisfaction, hence the check's satisfaction_stars).
    from pipeline.rubric.load import load_rubric

    repo_rubrics = sorted((Path(__file__).resolve().parents[2] / "rubric").glob("*.yaml"))
    for path in [p for p in repo_rubrics if p.name != "lexicons.yaml"]:
        rubric = load_rubric(path)
        ids = {d.id for d in rubric.dimensions} | {g.id for d in rubric.dimensions for g in d.groups}
        ids |= {c.id for c in rubric.criteria()}
        assert not ids & set(CHECKS), path.name
