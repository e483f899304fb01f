"""Human-label import: both layouts, both encodings, every kind of reject with its line."""

from __future__ import annotations

import csv
import io
import json
import math
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.errors import InputError
from pipeline.inputs.labels import Label, LabelSet, read_labels
from pipeline.rubric.load import parse_rubric
from pipeline.rubric.model import Rubric


def _levels(*points: int) -> list[dict[str, object]]:
    return [{"points": p, "description": f"{p} 分"} for p in points]


@pytest.fixture
def rubric() -> Rubric:
    """Two criteria: greeting on levels 0/3/5, closing on 0/2."""
    return mini_rubric()


def mini_rubric() -> Rubric:
    return parse_rubric(
        {
            "id": "mini",
            "version": "1",
            "name": "迷你质检表",
            "total": 7,
            "dimensions": [
                {
                    "id": "service",
                    "name": "服务",
                    "points": 7,
                    "groups": [
                        {
                            "id": "manners",
                            "name": "礼貌",
                            "points": 7,
                            "criteria": [
                                {"id": "greeting", "name": "问候", "max": 5, "levels": _levels(0, 3, 5)},
                                {"id": "closing", "name": "结束语", "max": 2, "levels": _levels(0, 2)},
                            ],
                        }
                    ],
                }
            ],
        },
        "test",
    )


def _write(tmp_path: Path, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_long_layout(tmp_path: Path, rubric: Rubric) -> None:
    path = _write(
        tmp_path,
        "transcript_id,criterion_id,score,rater_id,labelled_at\n"
        "t1,greeting,5,alice,2026-03-02 10:15:00\n"
        "t1,closing,2,alice,2026-03-02T02:15:00+00:00\n"
        "t2,greeting,3.0,bob,\n",
    )
    labels = read_labels(path, rubric)
    assert labels.rejects == []
    assert labels.labels[0] == Label(
        transcript_id="t1",
        criterion_id="greeting",
        score=5,
        rater_id="alice",
        labelled_at=datetime(2026, 3, 2, 2, 15, tzinfo=UTC),  # naive time is Beijing time, stored in UTC
    )
    assert labels.labels[1].labelled_at == labels.labels[0].labelled_at
    assert labels.labels[2].score == 3 and labels.labels[2].labelled_at is None
    assert labels.raters() == ["alice", "bob"] and labels.transcripts() == ["t1", "t2"]


def test_wide_layout_blank_means_not_labelled(tmp_path: Path, rubric: Rubric) -> None:
    path = _write(tmp_path, "transcript_id,rater_id,greeting,closing\nt1,alice,5,\nt1,bob,3,2\nt2,alice,,\n")
    labels = read_labels(path, rubric)
    assert labels.rejects == []
    assert [(x.transcript_id, x.rater_id, x.criterion_id, x.score) for x in labels.labels] == [
        ("t1", "alice", "greeting", 5),
        ("t1", "bob", "greeting", 3),
        ("t1", "bob", "closing", 2),
    ]


def test_gbk_and_bom(tmp_path: Path, rubric: Rubric) -> None:
    text = "transcript_id,rater_id,greeting\n会话1,张三,3\n"
    gbk = read_labels(_write(tmp_path, text, "gbk"), rubric)
    assert [(x.transcript_id, x.rater_id) for x in gbk.labels] == [("会话1", "张三")]
    bom = read_labels(_write(tmp_path, "\ufeff" + text, "utf-8"), rubric)
    assert bom.labels == gbk.labels and bom.rejects == []


def test_every_reject_kind_with_its_line(tmp_path: Path, rubric: Rubric) -> None:
    path = _write(
        tmp_path,
        "transcript_id,criterion_id,score,rater_id,labelled_at\n"  # 1
        "t1,greeting,5,alice,\n"  # 2 ok
        "t1,politeness,5,alice,\n"  # 3 unknown criterion
        "t1,closing,1,alice,\n"  # 4 not a level of closing (0/2)
        "t1,closing,good,alice,\n"  # 5 not a number
        "t9,greeting,3,alice,\n"  # 6 unknown transcript
        "t1,greeting,3,alice,\n"  # 7 duplicate of line 2
        "t2,greeting,,alice,\n"  # 8 missing score
        ",greeting,3,alice,\n"  # 9 missing transcript_id
        "t2,greeting,3,alice,yesterday\n"  # 10 bad time
        "t2,greeting,3\n"  # 11 no rater_id: the row ends early
        ",,,,\n"  # 12 blank row: skipped silently
        't2,closing,2,"bob\n'  # 13-14 a quoted cell spanning two lines…
        'smith",\n'
        "t2,closing,7,carol,\n",  # 15 …so this reject is on line 15
        "utf-8",
    )
    labels = read_labels(path, rubric, known_transcripts={"t1", "t2"})
    found = [(r.line, r.field, r.reason) for r in labels.rejects]
    expected = [
        (3, "criterion_id", "unknown criterion 'politeness'"),
        (4, "closing", "score 1 is not a level of closing (allowed: 0, 2)"),
        (5, "closing", "not a number"),
        (6, "transcript_id", "unknown transcript 't9'"),
        (7, "greeting", "on line 2"),
        (8, "score", "missing score"),
        (9, "transcript_id", "missing transcript_id"),
        (10, "labelled_at", "yesterday"),
        (11, "rater_id", "missing rater_id"),
        (15, "closing", "score 7 is not a level"),
    ]
    assert [(line, field) for line, field, _ in found] == [(line, field) for line, field, _ in expected]
    for (_, _, reason), (_, _, part) in zip(found, expected, strict=True):
        assert part in reason
    assert all(r.file == str(path) for r in labels.rejects)
    assert labels.rejects[0].transcript_id == "t1" and labels.rejects[6].transcript_id is None
    assert [(x.transcript_id, x.rater_id, x.score) for x in labels.labels] == [
        ("t1", "alice", 5),
        ("t2", "bob\nsmith", 2),
    ]


def test_wide_rejects_unknown_columns_and_bad_cells(tmp_path: Path, rubric: Rubric) -> None:
    path = _write(
        tmp_path,
        "transcript_id,rater_id,greeting,politeness,closing\n"
        "t1,alice,4,1,2\n"  # greeting 4 is not a level; the rest of the row is used
        "t1,alice,5,,2\n"  # closing duplicates line 2; greeting is new (line 2's was rejected)
        "t1,,5,,\n",  # missing rater
    )
    labels = read_labels(path, rubric)
    found = [(r.line, r.field) for r in labels.rejects]
    assert found == [(1, "politeness"), (2, "greeting"), (3, "closing"), (4, "rater_id")]
    assert "not a criterion of rubric mini" in labels.rejects[0].reason
    assert [(x.criterion_id, x.score) for x in labels.labels] == [("closing", 2), ("greeting", 5)]


def test_a_wide_row_without_its_trailing_blank_cells_keeps_its_scores(tmp_path: Path, rubric: Rubric) -> None:
    """Excel saves some rows of a CSV without the commas of their empty last cells (Stata FAQ, "How Excel
    writes empty cells"): those scores were all lost as "2 cells but the header has 4"."""
    path = _write(tmp_path, "transcript_id,rater_id,greeting,closing\n"
                            "t1,alice,5,\n"
                            "t2,alice,3\n"  # closing left out
                            "t3,alice\n"  # nothing labelled
                            "t4,alice,5,2,,\n"  # blank extra cells
                            "t5,alice,5,2,9\n")  # a value beyond the header
    labels = read_labels(path, rubric)
    assert [(x.transcript_id, x.criterion_id, x.score) for x in labels.labels] == [
        ("t1", "greeting", 5), ("t2", "greeting", 3), ("t4", "greeting", 5), ("t4", "closing", 2)]
    assert [(r.line, r.reason) for r in labels.rejects] == [(6, "5 cells but the header has 4")]


def test_matrix(tmp_path: Path, rubric: Rubric) -> None:
    path = _write(
        tmp_path,
        "transcript_id,rater_id,greeting,closing\nt2,bob,3,2\nt1,alice,5,\nt1,bob,0,\nt3,carol,,0\n",
    )
    units, raters, scores = read_labels(path, rubric).matrix("greeting")
    assert units == ["t1", "t2"] and raters == ["alice", "bob"]  # carol never scored greeting
    assert scores[0].tolist() == [5.0, 0.0]
    assert math.isnan(scores[1, 0]) and scores[1, 1] == 3.0


def test_unreadable_files(tmp_path: Path, rubric: Rubric) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_labels(tmp_path / "missing.csv", rubric)
    with pytest.raises(InputError, match="empty file"):
        read_labels(_write(tmp_path, ""), rubric)
    with pytest.raises(InputError, match="neither layout"):
        read_labels(_write(tmp_path, "id,who,points\n1,a,3\n"), rubric)
    with pytest.raises(InputError, match="repeats"):
        read_labels(_write(tmp_path, "transcript_id,rater_id,greeting,greeting\n"), rubric)
    unicode_text = tmp_path / "unicode.csv"  # Excel's "Unicode Text": UTF-16 with a BOM
    unicode_text.write_bytes("transcript_id\trater_id\tgreeting\n会话1\t张三\t3\n".encode("utf-16"))
    with pytest.raises(InputError, match=r"标注文件不是 UTF-8 或 GBK 文本 .*：它是 UTF-16（Excel 的“Unicode 文本”）"):
        read_labels(unicode_text, rubric)


def test_label_times_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Label(transcript_id="t", criterion_id="c", score=1, rater_id="r", labelled_at=datetime(2026, 1, 1))
    assert LabelSet(labels=[]).matrix("greeting").scores.shape == (0, 0)


LABEL_CELLS = st.sampled_from(["c1", "r1", "greeting", "closing", "3", "5", "1e400", "nan", "2026-03-02", "",
                               "\x00", "\x01", "\u2028", '"', "x" * 140_000]) | st.text(max_size=5)


@given(header=st.sampled_from(["transcript_id,criterion_id,score,rater_id", "transcript_id,rater_id,greeting",
                               "a,b"]),
       rows=st.lists(st.lists(LABEL_CELLS, max_size=5), max_size=5), noise=st.binary(max_size=20))
def test_any_label_file_is_read_or_refused_as_a_whole(header: str, rows: list[list[str]], noise: bytes) -> None:
    """A label file yields labels and rejects, or one InputError (the CLI's one-line message); nothing else."""
    out = io.StringIO(newline="")
    csv.writer(out).writerows(rows)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "labels.csv"
        path.write_bytes((header + "\n" + out.getvalue()).encode("utf-8") + noise)
        try:
            labels = read_labels(path, mini_rubric())
        except InputError:
            return
    for reject in labels.rejects:
        json.dumps(reject.model_dump()).encode("utf-8")
