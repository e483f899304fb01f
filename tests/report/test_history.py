"""`kefu report --history`: each criterion's agreement over periodic checks, oldest first, judge changes marked."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.cli import check as cli_check
from pipeline.consistency.assess import assess
from pipeline.consistency.results import CheckOptions, CheckResult
from pipeline.errors import InputError
from pipeline.inputs.labels import Label, LabelSet
from pipeline.report.render import write_report
from pipeline.report.result_file import load_result
from pipeline.rubric.load import load_rubric

REPO = Path(__file__).resolve().parents[2]
DCH1 = REPO / "rubric" / "dch1_quality.yaml"
UNITS = [f"t{i}" for i in range(6)]
HUMAN = [0, 1, 1, 2, 2, 2]


def _check(judge: list[int], model: str, day: int) -> CheckResult:
    rubric = load_rubric(DCH1)
    labels = LabelSet(labels=[Label(transcript_id=u, criterion_id=c.id, score=h, rater_id="qa")
                              for c in rubric.criteria() for u, h in zip(UNITS, HUMAN, strict=True)])
    scores = {u: {0: {c.id: j for c in rubric.criteria()}} for u, j in zip(UNITS, judge, strict=True)}
    result = assess(rubric, labels, scores, options=CheckOptions(n_resamples=50), repeats=1, model=model,
                    rubric_path=str(DCH1)).result
    return result.model_copy(update={"created_at": datetime(2026, 1, day, tzinfo=UTC)})


def test_history_lists_checks_oldest_first_and_marks_a_new_judge(tmp_path: Path) -> None:
    # Written out of order: the history sorts by when each check was computed.
    write_report(_check(HUMAN, "m2", 20), tmp_path / "march")
    write_report(_check([0, 0, 1, 1, 2, 2], "m1", 5), tmp_path / "jan")
    write_report(_check([0, 0, 1, 1, 2, 2], "m1", 12), tmp_path / "feb")
    result = CliRunner().invoke(cli_check.app, ["report", str(tmp_path / "march"), "--history", str(tmp_path / "feb"),
                                                "--history", str(tmp_path / "jan")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "march" / "history.md").read_text(encoding="utf-8")
    header = next(line for line in md.splitlines() if line.startswith("| 评分项"))
    assert header == "| 评分项 | 2026-01-05 | 2026-01-12 | 2026-01-20 * |"
    row = next(line for line in md.splitlines() if line.startswith("| accomplishment"))
    assert row.count("0.75 [") == 2 and "1.00 [1.00, 1.00] 可信" in row  # κw 0.75 (hand-derived), then 1
    assert "模型：m1 → m2" in md
    html = (tmp_path / "march" / "history.html").read_text(encoding="utf-8")
    assert html.count("<svg") == 3 and "评判模型已变更" in html
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", html)  # self-contained


@pytest.mark.parametrize(("content", "words"), [
    (b"", "agreement.json 不是有效的 JSON"),
    (b"[" * 100_000, "agreement.json 不是有效的 JSON"),  # was a RecursionError
    ("一致性".encode("gbk"), "agreement.json 不是 UTF-8 文本：第 3 个字节无法解码"),
    (None, "无法读取 agreement.json：不存在 (not found)"),  # was "[Errno 2] No such file or directory: …"
])
def test_an_agreement_json_that_is_missing_or_broken_is_one_message_without_python_text(
    tmp_path: Path, content: bytes | None, words: str
) -> None:
    path = tmp_path / "agreement.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(InputError) as info:
        load_result(path)
    assert words in str(info.value) and "Errno" not in str(info.value)
