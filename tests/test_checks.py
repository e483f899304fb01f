"""The per-transcript checks record: its columns are the hook vocabulary, and it survives the store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.checks import CHECKS, CheckKind, ServiceChecker, TranscriptChecks
from pipeline.transcripts import Role, Transcript, Turn

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
    times = set(checks.timing.columns()) - {"timing_not_measurable", "first_reply_status"}
    assert len(times) == 12 and all(cols[n] is None for n in times)
    assert cols["banned_hits"] == 1  # phrases do not need times


def test_record_round_trips_through_json(checker: ServiceChecker) -> None:
    checks = checker.check(chat())
    record = json.loads(json.dumps(checks.record(), ensure_ascii=False))
    assert record["columns"] == json.loads(json.dumps(checks.columns()))
    assert TranscriptChecks.from_record(record) == checks
