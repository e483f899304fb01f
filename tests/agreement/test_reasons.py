"""Reasons a statistic is undefined: every recorded sentence is matched back to its id and figures."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.agreement.reasons import REASONS, reason, reason_key
from pipeline.report.messages import catalogue, reason_text


@given(key=st.sampled_from(sorted(REASONS)), a=st.integers(0, 10**6), b=st.floats(0, 1).map(lambda x: f"{x:.3f}"))
def test_every_reason_reads_back_as_its_id_and_figures(key: str, a: int, b: str) -> None:
    fields = {"min_units": a, "n": a + 1, "rho": b, "p": b}
    found = reason_key(reason(key, **fields))
    assert found is not None and found[0] == key
    assert all(str(fields[k]) == v for k, v in found[1].items())


def test_every_reason_has_a_message_in_each_language() -> None:
    for lang in ("zh", "en"):
        assert {f"why.{k}" for k in REASONS} <= set(catalogue()[lang])
    assert reason_text(reason("alt_few", min_units=30, n=2)) == "需要至少 3 位各评了 30 条以上对话的评分员，只有 2 位"
    assert reason_text("a sentence of an older version") == "a sentence of an older version"


@given(st.text())
def test_any_text_is_shown_as_it_is_or_as_a_known_reason(text: str) -> None:
    shown = reason_text(text, "en")
    assert shown == text or reason_key(text) is not None


@pytest.mark.parametrize("key", sorted(REASONS))
def test_templates_do_not_overlap(key: str) -> None:
    # Each sentence matches its own template only, so a report never shows another reason's words.
    sentence = reason(key, min_units=30, n=2, rho="0.10", p="0.500")
    assert reason_key(sentence) == (key, {k: v for k, v in {"min_units": "30", "n": "2", "rho": "0.10",
                                                              "p": "0.500"}.items() if "{" + k + "}" in REASONS[key]})
