"""Hooks over whole columns (`Condition.mask`, `final_frame`) give exactly what the per-chat rules give
(`Condition.holds`, `apply_hooks`), for any check values, any scores and every rubric with hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from pipeline.models.checks import CHECKS, CheckKind, ColumnValue
from pipeline.rubric.conditions import AllOf, AnyOf, Condition, Equals, Is
from pipeline.rubric.final_frame import final_frame
from pipeline.rubric.hooks import apply_hooks
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric

REPO = Path(__file__).resolve().parents[2]
RUBRICS = [load_rubric(REPO / p) for p in ("rubric/ecommerce_cs.yaml", "rubric/dch1_quality.yaml",
                                           "tests/data/tiny_hooks.yaml")]
HOOKED = [r for r in RUBRICS if r.caps or r.critical]
CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)
NUMBERS = [n for n, s in CHECKS.items() if s.kind is CheckKind.number]
FLAGS = [n for n, s in CHECKS.items() if s.kind in (CheckKind.flag, CheckKind.reason)]
CHOICES = [n for n, s in CHECKS.items() if s.kind is CheckKind.choice]
BOUNDS = [0, 1, 599.5, 600]
"""Thresholds, and the values most check cells take: a value on a bound tells > from >= and < from <=."""


def _value(kind: CheckKind, name: str) -> st.SearchStrategy[ColumnValue]:
    if kind is CheckKind.number:
        return st.none() | st.sampled_from(BOUNDS) | st.sampled_from(BOUNDS) | st.floats(-5, 1e4)
    if kind is CheckKind.flag:
        return st.none() | st.booleans()
    if kind is CheckKind.choice:
        return st.none() | st.sampled_from(list(CHECKS[name].choices))
    return st.none() | st.text(max_size=3)


CHECK_ROW = st.fixed_dictionaries({n: _value(s.kind, n) for n, s in CHECKS.items()})
LEAF = st.one_of(
    st.builds(lambda c, op, x: {"check": c, op: x}, st.sampled_from(NUMBERS),
              st.sampled_from(["above", "at_least", "below", "at_most"]), st.sampled_from(BOUNDS)),
    st.builds(lambda c, x: {"check": c, "is": x}, st.sampled_from(FLAGS), st.booleans()),
    st.builds(lambda c, data: {"check": c, "equals": data.draw(st.sampled_from(list(CHECKS[c].choices)))},
              st.sampled_from(CHOICES), st.data()),
)
CONDITIONS = st.recursive(LEAF, lambda inner: st.builds(lambda k, cs: {k: cs}, st.sampled_from(["any", "all"]),
                                                        st.lists(inner, min_size=1, max_size=3)), max_leaves=6)


def frames(rows: list[dict[str, ColumnValue] | None]) -> list[pd.DataFrame]:
    """The rows as the generic frame (cells as given, None where missing) and as the overview reads them (numbers
    as floats, NaN where missing); a chat without checks is a row of missing cells in both."""
    plain = pd.DataFrame([r or dict.fromkeys(CHECKS) for r in rows], columns=list(CHECKS), dtype=object)
    typed = plain.copy()
    for n in NUMBERS:
        typed[n] = pd.to_numeric(typed[n]).astype(float)
    return [plain, typed]


@settings(max_examples=300, deadline=None)
@given(CONDITIONS, st.lists(st.none() | CHECK_ROW, min_size=1, max_size=8))
def test_a_condition_over_columns_holds_where_it_holds_for_each_chat(
        raw: dict[str, Any], rows: list[dict[str, ColumnValue] | None]) -> None:
    condition = CONDITION.validate_python(raw)
    expected = [condition.holds(r or {}) for r in rows]
    for frame in frames(rows):
        assert condition.mask(frame).tolist() == expected


def test_the_generated_conditions_reach_every_operator() -> None:
    assert {type(CONDITION.validate_python(x)) for x in ({"check": "greeting_found", "is": True},
                                                          {"check": "first_reply_status", "equals": "answered"},
                                                          {"any": [{"check": "max_wait_s", "above": 1}]},
                                                          {"all": [{"check": "max_wait_s", "above": 1}]})} == {
        Is, Equals, AnyOf, AllOf}


@pytest.mark.parametrize("rubric", HOOKED, ids=[r.id for r in HOOKED])
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_final_scores_over_columns_are_apply_hooks_row_by_row(rubric: Rubric, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 8))
    rows = data.draw(st.lists(st.none() | CHECK_ROW, min_size=n, max_size=n))
    llm = [{c.id: data.draw(st.none() | st.sampled_from(c.points)) for c in rubric.criteria()} for _ in range(n)]
    expected = [apply_hooks(rubric, scores, checks) for scores, checks in zip(llm, rows, strict=True)]
    for frame in frames(rows):
        final = final_frame(rubric, pd.DataFrame(llm, dtype=float), frame)
        for i, adjusted in enumerate(expected):
            finals = [adjusted.scores[c.id] for c in rubric.criteria()]
            assert [None if np.isnan(v) else v for v in final.scores.iloc[i]] == finals
            assert bool(final.critical[i]) == adjusted.critical_failed
            total = 0 if adjusted.critical_failed else None if None in finals else sum(f or 0 for f in finals)
            assert (None if np.isnan(final.total[i]) else final.total[i]) == total
