"""Cutting a turn's text at its marks (evidence quotes, phrase hits) for the chat page."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.review.chatview import split_marked


def test_overlapping_marks_cut_the_text_into_pieces_that_list_what_covers_them() -> None:
    marks = [(0, 4, "evidence", "招呼语"), (2, 6, "banned", "违禁用语")]
    pieces = [(s.text, s.marks, s.notes) for s in split_marked("亲，您好，知道", marks)]
    assert pieces == [
        ("亲，", ["evidence"], ["招呼语"]),
        ("您好", ["banned", "evidence"], ["招呼语", "违禁用语"]),
        ("，知", ["banned"], ["违禁用语"]),
        ("道", [], []),
    ]


marks_strategy = st.lists(st.tuples(st.integers(-3, 40), st.integers(-3, 40), st.sampled_from(["evidence", "banned"]),
                                     st.text(max_size=5)), max_size=6)


@given(st.text(max_size=30), marks_strategy)
def test_pieces_rebuild_the_text_and_each_character_carries_exactly_its_marks(
        text: str, marks: list[tuple[int, int, str, str]]) -> None:
    pieces = split_marked(text, marks)
    assert "".join(p.text for p in pieces) == text
    at = 0
    for piece in pieces:
        for offset in range(len(piece.text)):
            i = at + offset
            assert set(piece.marks) == {kind for start, end, kind, _ in marks if start <= i < end}
        at += len(piece.text)
