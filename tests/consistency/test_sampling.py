"""Stratified samples: proportional allocation by hand, and properties over any run."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.cli.console import read_ids
from pipeline.consistency.sampling import allocate, draw_sample, sample_strata, sample_text


def test_allocation_by_hand() -> None:
    # 10 of 6 + 3 + 1 chats: quotas 6, 3, 1 exactly.
    assert allocate({"a": 6, "b": 3, "c": 1}, 10) == {"a": 6, "b": 3, "c": 1}
    # 5 of 6 + 3 + 1: quotas 3, 1.5, 0.5 → floors 3 1 0, one left for the larger remainder (tie → name: b).
    assert allocate({"a": 6, "b": 3, "c": 1}, 5) == {"a": 3, "b": 2, "c": 0}
    assert allocate({"a": 2}, 9) == {"a": 2} and allocate({}, 3) == {}


def test_sample_is_seeded_and_stratified() -> None:
    groups = {f"t{i:03d}": ("alice" if i < 60 else "bob" if i < 90 else None) for i in range(100)}
    sample = draw_sample(groups, 10, seed=1)
    assert sample == draw_sample(groups, 10, seed=1) and sample != draw_sample(groups, 10, seed=2)
    by = [groups[t] for t in sample]
    assert (by.count("alice"), by.count("bob"), by.count(None)) == (6, 3, 1)


@given(st.dictionaries(st.text(min_size=1, max_size=5), st.sampled_from(["a", "b", "c", None]), max_size=40),
       st.integers(0, 50), st.integers(0, 2**32 - 1))
def test_sample_properties(groups: dict[str, str | None], n: int, seed: int) -> None:
    sample = draw_sample(groups, n, seed)
    assert len(sample) == min(n, len(groups)) == len(set(sample)) and set(sample) <= set(groups)
    for g in set(groups.values()):
        size = sum(v == g for v in groups.values())
        taken = sum(groups[t] == g for t in sample)
        assert abs(taken - min(n, len(groups)) * size / len(groups)) < 1 + 1e-9


_IDS = st.lists(st.text(st.characters(blacklist_categories=["Cs", "Cc", "Zs", "Zl", "Zp"]), min_size=1)
                .filter(lambda t: not t.startswith("#")), max_size=20, unique=True)


@given(ids=_IDS, by=st.sampled_from(["agent", "shop", "platform", "day"]), seed=st.integers(0, 2**32))
def test_a_sample_file_names_its_strata_and_reads_back_as_its_ids(
        tmp_path_factory: pytest.TempPathFactory, ids: list[str], by: str, seed: int) -> None:
    text = sample_text(ids, by, seed)
    assert text.startswith(f"# kefu sample: strata={by} seed={seed}\n") and sample_strata(text) == by
    path = tmp_path_factory.getbasetemp() / "sample_ids.txt"
    path.write_text(text, encoding="utf-8")
    assert read_ids(path) == set(ids)  # the comment line is not an id


@given(st.text())
def test_any_other_text_has_no_strata(text: str) -> None:
    # A plain list of ids (or anything else) is taken for a simple random sample.
    assert sample_strata(text) is None or text.startswith("# kefu sample: strata=")
