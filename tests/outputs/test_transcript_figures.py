"""Every transcript's figures come back from the store's CSV lines as they were written, whatever the texts hold."""

from __future__ import annotations

import json
import math
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.models.checks import CheckKind
from pipeline.outputs.figures import read_transcript_figures
from pipeline.store.store import Store
from pipeline.store.transcript_figures import FIGURE_COLUMNS

# Newlines and quotes too, though readers refuse control characters in labels (pipeline/inputs/limits.py);
# not NUL, at which SQLite's text functions stop.
LABEL = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
TEXT = st.none() | LABEL | st.sampled_from(
    ["", ",", '"', '""', "\n", "\r\n", "a,b\nc", "null", "NULL", "NA", "nan", "true", "1", "=1+1", "<script>"])
VALUE = {
    CheckKind.number: st.none() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False),
    CheckKind.flag: st.none() | st.booleans(),
    CheckKind.reason: TEXT,
    CheckKind.choice: TEXT,
}
CHAT = st.fixed_dictionaries({
    "meta": st.tuples(TEXT, TEXT, TEXT),
    "values": st.fixed_dictionaries({c.name: VALUE[c.kind] for c in FIGURE_COLUMNS}),
    "checks": st.sampled_from(["json", "none", "nan"]),
})


def stored_checks(values: dict[str, Any]) -> dict[str, Any]:
    """A checks record holding `values` where each figure column is read from (its `path`)."""
    record: dict[str, Any] = {}
    for column in FIGURE_COLUMNS:
        *parents, name = column.path.removeprefix("$.").split(".")
        node = record
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = values[column.name]
    return record


def same(read: Any, written: Any) -> bool:
    """A frame's cell holds what was written: missing as missing (None or NaN), texts and flags exactly."""
    if written is None:
        return read is None or (isinstance(read, float) and math.isnan(read))
    if isinstance(written, bool):
        return isinstance(read, bool | np.bool_) and bool(read) is written
    if isinstance(written, str):
        return isinstance(read, str) and read == written
    return float(read) == float(written)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(CHAT, min_size=1, max_size=5))
def test_every_value_and_text_reads_back_as_written(chats: list[dict[str, Any]]) -> None:
    with TemporaryDirectory() as tmp, Store.open(Path(tmp)) as store:
        for number, chat in enumerate(chats):
            checks = {"json": stored_checks(chat["values"]), "none": None,
                      "nan": json.dumps({"columns": {"first_response_s": float("nan")}})}[chat["checks"]]
            platform, shop, agent = chat["meta"]
            store.save_transcript_meta(transcript_id=f"{number}\n,\"{platform}", content_hash="h", platform=platform,
                                       shop=shop, agent_id=agent, started_at=None, n_turns=1, source=None,
                                       checks=checks)
        frame = read_transcript_figures(store).set_index("transcript_id")
    assert len(frame) == len(chats)
    for number, chat in enumerate(chats):
        platform, shop, agent = chat["meta"]
        row = frame.loc[f"{number}\n,\"{platform}"]
        assert all(map(same, [row["platform"], row["shop"], row["stored_agent"]], [platform, shop, agent]))
        assert row["has_checks"] == (chat["checks"] == "json")
        for column in FIGURE_COLUMNS:
            written = chat["values"][column.name] if chat["checks"] == "json" else None
            assert same(row[column.name], written), (column.name, row[column.name], written)
