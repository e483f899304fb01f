"""The agreement report of a small check says it is small, gives no verdict and explains undefined numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_report import HUMAN, JUDGE, REPO, UNITS, check_result

from pipeline.consistency.sample_size import MIN_LABELLED, TOO_FEW, SampleSize
from pipeline.report.render import write_report
from pipeline.testing.mockserver import MockServer

# 12 chats where judge and human agree exactly: κw is 1 on every resample, which would be "trusted".
AGREE = JUDGE + JUDGE
UNITS12 = UNITS + [f"u{i}" for i in range(6)]


@pytest.mark.parametrize("minimum, trusted_shown", [(MIN_LABELLED, False), (12, True)])
def test_below_the_minimum_the_report_says_so_first_and_gives_no_verdict(
        tmp_path: Path, minimum: int, trusted_shown: bool) -> None:
    result = check_result(AGREE, AGREE, UNITS12)
    assert {c.verdict for c in result.criteria} == {"trusted"}
    files = write_report(result, tmp_path, command="kefu demo", min_labelled=minimum)
    md = files.agreement_md.read_text(encoding="utf-8")
    html = files.report_html.read_text(encoding="utf-8")
    notice = f"只有 12 个带标注的对话，少于 {minimum} 个"
    if trusted_shown:
        assert notice not in md and notice not in html and "| 可信 |" in md and "verdict v-trusted" in html
    else:
        assert md.index(notice) < md.index("## 各评分项") and "| 可信 |" not in md
        assert TOO_FEW == "too few" and "| 样本太少 |" in md
        assert html.index(notice) < html.index("<h2>") and "verdict v-trusted" not in html and 'role="alert"' in html
        assert "ICC 在这么小的样本上没有意义" in md and "ICC 在这么小的样本上没有意义" in html
    assert "由 `kefu demo` 生成" in md and "由 kefu demo 生成" in html


@pytest.mark.parametrize("judge, human, why", [
    ([2] * 6, [2] * 6, "两边的分数全是同一个等级"),  # undefined: the statistic's own reason, in Chinese
    (JUDGE, [2] * 6, "人工评分只用了一个等级"),  # defined as 0, and meaningless
    ([2] * 6, JUDGE, "评分模型只给了一个等级"),
])
def test_an_undefined_or_meaningless_kappa_is_shown_with_its_reason(
        tmp_path: Path, judge: list[int], human: list[int], why: str) -> None:
    files = write_report(check_result(judge, human), tmp_path)
    md = files.agreement_md.read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| accomplishment |"))
    assert f"— ({why}" in row and "0.00" not in row.split("|")[4]
    assert f"— {why}" in files.report_html.read_text(encoding="utf-8")


def test_a_check_of_six_chats_shows_the_reason_instead_of_the_icc(tmp_path: Path) -> None:
    result = check_result(JUDGE, HUMAN)
    total = next(s for s in result.sums if s.kind == "total")
    assert total.icc.reason is None  # pingouin gives a number for six chats; the report must not show it
    md = write_report(result, tmp_path).agreement_md.read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| 总分"))
    assert "只有 6 个对话，少于 30" in row and f"{total.icc.estimate:.2f} [" not in row


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=1, max_value=200),
       st.sampled_from([None, "trusted", "review", "not trusted"]))
def test_no_verdict_below_the_minimum_and_the_check_s_own_above(n: int, minimum: int, verdict: str | None) -> None:
    sample = SampleSize(n=n, minimum=minimum)
    shown = sample.verdict(verdict)
    assert shown == (verdict if n >= minimum or verdict is None else TOO_FEW)
    assert (sample.notice() is None) == (n >= minimum)
    assert (sample.icc_reason(None) is None) == (n >= minimum)


def test_kefu_check_on_three_chats_says_so_on_the_console(mock_server: MockServer, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import check as cli_check

    out = tmp_path / "check"
    result = CliRunner().invoke(cli_check.app, [
        "check", str(REPO / "eval_sets/ecommerce_cs.jsonl"),
        "--labels", str(REPO / "eval_sets/ecommerce_cs_labels.csv"), "--ids", str(REPO / "eval_sets/demo_ids.txt"),
        "--out", str(out), "--repeats", "1", "--resamples", "20",
        "--base-url", mock_server.base_url, "--model", "mock-model"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text
    # demo-007 addresses the grader: it is left out, so 2 of the 3 count.
    assert "⚠ 只有 2 个带标注的对话，少于 30 个" in text and " trusted " not in text
    md = (out / "agreement.md").read_text(encoding="utf-8")
    assert "由 `kefu check` 生成" in md and "只有 2 个带标注的对话" in md
