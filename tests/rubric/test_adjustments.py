"""Rubric hooks on stored grades: caps, critical items, the order between them, and missing checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models.checks import ColumnValue
from pipeline.rubric.hooks import Decision, apply_hooks
from pipeline.rubric.load import load_rubric, parse_rubric
from pipeline.rubric.model import Rubric

DATA = Path(__file__).resolve().parents[1] / "data"
FULL = {"polite": 4, "greet": 2, "pitch": 4}


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(DATA / "tiny_hooks.yaml")


def checks(**values: ColumnValue) -> dict[str, ColumnValue]:
    return {"max_wait_s": 30.0, "banned_hits": 0, **values}


def test_no_condition_holds_nothing_changes(rubric: Rubric) -> None:
    adjusted = apply_hooks(rubric, FULL, checks())
    assert adjusted.scores == FULL and adjusted.adjustments == () and not adjusted.critical_failed
    assert adjusted.describe() is None


def test_cap_lowers_the_score_and_keeps_the_llms(rubric: Rubric) -> None:
    adjusted = apply_hooks(rubric, FULL, checks(max_wait_s=601.0))
    assert adjusted.scores == {"polite": 4, "greet": 2, "pitch": 0}
    assert adjusted.llm_scores == FULL
    assert adjusted.describe() == "推荐 封顶 4→0：超过10分钟未回复" and adjusted.codes() == "cap:pitch"
    assert adjusted.describe("pitch") == adjusted.describe() and adjusted.describe("polite") is None


def test_a_reviewers_decision_reads_as_one_not_as_a_critical_item(rubric: Rubric) -> None:
    adjusted = apply_hooks(rubric, FULL, checks(), {"greet": Decision(0, "组长: 核实后改判")})
    assert adjusted.describe() == "招呼 复核改判 2→0：组长: 核实后改判" and adjusted.codes() == "review:greet"
    assert not adjusted.critical_failed


def test_cap_boundary_is_strict_and_never_raises_a_score(rubric: Rubric) -> None:
    assert apply_hooks(rubric, FULL, checks(max_wait_s=600.0)).scores == FULL  # above 600, not at 600
    low = {**FULL, "pitch": 0}
    assert apply_hooks(rubric, low, checks(max_wait_s=900.0)).adjustments == ()


def test_critical_on_a_criterion_reads_the_llm_score(rubric: Rubric) -> None:
    adjusted = apply_hooks(rubric, {**FULL, "polite": 0}, checks())
    assert adjusted.critical_failed
    assert adjusted.describe() == "致命项：礼貌 得 0 分：态度粗鲁" and adjusted.codes() == "critical:polite"
    assert adjusted.scores["polite"] == 0 and adjusted.scores["greet"] == 2  # criteria keep their points


def test_critical_on_a_check(rubric: Rubric) -> None:
    assert not apply_hooks(rubric, FULL, checks(banned_hits=1)).critical_failed
    adjusted = apply_hooks(rubric, FULL, checks(banned_hits=2))
    assert adjusted.critical_failed and adjusted.describe() == "致命项：多次使用禁用语"
    assert adjusted.codes() == "critical"


def test_a_cap_alone_never_fails_a_chat(rubric: Rubric) -> None:
    # The cap puts polite at 0, the critical item says "polite at 0 fails": it reads the LLM's 4, so no failure.
    data = rubric.model_dump(mode="json", by_alias=True)
    data["caps"] = [{"criterion": "polite", "cap": 0, "when": {"check": "max_wait_s", "above": 600}, "reason": "慢"}]
    capped = parse_rubric(data, "inline")
    adjusted = apply_hooks(capped, FULL, checks(max_wait_s=700.0))
    assert adjusted.scores["polite"] == 0 and not adjusted.critical_failed


def test_without_checks_or_with_unmeasured_values_no_condition_holds(rubric: Rubric) -> None:
    assert apply_hooks(rubric, FULL, None).adjustments == ()
    assert apply_hooks(rubric, FULL, checks(max_wait_s=None, banned_hits=None)).adjustments == ()


def test_unscored_criteria_stay_unscored(rubric: Rubric) -> None:
    scores = {"polite": None, "greet": None, "pitch": None}
    adjusted = apply_hooks(rubric, scores, checks(max_wait_s=700.0, banned_hits=3))
    assert adjusted.scores == scores
    assert [a.kind for a in adjusted.adjustments] == ["critical"]  # the check's veto needs no score


@pytest.mark.parametrize(
    ("condition", "values", "holds"),
    [
        ({"check": "max_wait_s", "at_least": 600}, {"max_wait_s": 600.0}, True),
        ({"check": "max_wait_s", "below": 60}, {"max_wait_s": 60.0}, False),
        ({"check": "max_wait_s", "at_most": 60}, {"max_wait_s": 60.0}, True),
        ({"check": "greeting_found", "is": False}, {"greeting_found": False}, True),
        ({"check": "greeting_found", "is": False}, {"greeting_found": None}, False),
        ({"check": "timing_not_measurable", "is": True}, {"timing_not_measurable": "no timestamps"}, True),
        ({"check": "timing_not_measurable", "is": False}, {"timing_not_measurable": None}, True),
        ({"check": "first_reply_status", "equals": "no_human_reply"}, {"first_reply_status": "answered"}, False),
        ({"any": [{"check": "banned_hits", "at_least": 1}, {"check": "closing_found", "is": False}]},
         {"banned_hits": 0, "closing_found": False}, True),
        ({"all": [{"check": "banned_hits", "at_least": 1}, {"check": "closing_found", "is": False}]},
         {"banned_hits": 0, "closing_found": False}, False),
    ],
)
def test_condition_language(rubric: Rubric, condition: dict[str, object], values: dict[str, ColumnValue],
                            holds: bool) -> None:
    data = rubric.model_dump(mode="json", by_alias=True)
    data["critical"] = [{"when": condition, "reason": "r"}]
    assert apply_hooks(parse_rubric(data, "inline"), FULL, values).critical_failed is holds
