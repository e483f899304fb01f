"""rejects.jsonl lines (pipeline/inputs/rejects.py): one line per reject for any reader, whatever a field holds."""

from __future__ import annotations

import json

from conftest import LINE_BREAK_TEXT
from hypothesis import example, given
from hypothesis import strategies as st

from pipeline.inputs.rejects import reject_line
from pipeline.models.transcript import Reject


@given(file=LINE_BREAK_TEXT, transcript_id=st.none() | LINE_BREAK_TEXT, field=st.none() | LINE_BREAK_TEXT,
       reason=LINE_BREAK_TEXT,
       line=st.none() | st.integers(min_value=1))
@example(file="导出\u2028.jsonl", transcript_id="c\x85", field=None, reason="r", line=3)
def test_a_reject_is_one_line_for_str_splitlines_and_reads_back(
    file: str, transcript_id: str | None, field: str | None, reason: str, line: int | None
) -> None:
    reject = Reject(file=file, line=line, transcript_id=transcript_id, field=field, reason=reason)
    [one] = reject_line(reject).splitlines()
    assert Reject.model_validate(json.loads(one)) == reject
