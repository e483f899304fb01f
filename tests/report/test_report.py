"""Check reports: escaping of chat text, a page that needs no network, agreement.json round trips,
the changes since a previous check, the rubric comparison files and `kefu report`."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import escape
from typer.testing import CliRunner, Result

from pipeline.cli import check as cli_check
from pipeline.consistency.assess import assess
from pipeline.consistency.job import CheckJob, CheckRun, run_check
from pipeline.consistency.results import CheckOptions, CheckResult
from pipeline.consistency.sample_size import TOO_FEW, SampleSize
from pipeline.consistency.wordings import compare_rubrics
from pipeline.grading.settings import load_settings
from pipeline.inputs.labels import Label, LabelSet
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.report.charts import heatmap
from pipeline.report.compare import compare_results
from pipeline.report.render import _environment, write_report, write_rubric_comparison
from pipeline.report.result_file import load_result
from pipeline.report.views import marked_turns
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import DB_NAME, Store
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content

REPO = Path(__file__).resolve().parents[2]
ECOMMERCE = REPO / "rubric" / "ecommerce_cs.yaml"
DCH1 = REPO / "rubric" / "dch1_quality.yaml"
JUDGE = [0, 0, 1, 1, 2, 2]
HUMAN = [0, 1, 1, 2, 2, 2]
UNITS = [f"t{i}" for i in range(6)]
OPTIONS = CheckOptions(n_resamples=200)
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|@import|<link\b""", re.IGNORECASE)


def check_result(judge: list[int], human: list[int], units: list[str] = UNITS, raters: int = 1) -> CheckResult:
    """A check on dch1_quality with the same scores for every criterion; extra raters copy the first."""
    rubric = load_rubric(DCH1)
    labels = LabelSet(labels=[Label(transcript_id=u, criterion_id=c.id, score=h, rater_id=f"qa{r}")
                              for r in range(raters) for c in rubric.criteria()
                              for u, h in zip(units, human, strict=True)])
    scores = {u: {0: {c.id: j for c in rubric.criteria()}} for u, j in zip(units, judge, strict=True)}
    return assess(rubric, labels, scores, options=OPTIONS, repeats=1, model="m", rubric_path=str(DCH1)).result


def test_templates_escape_html_but_not_markdown() -> None:
    env = _environment()
    assert env.undefined is jinja2.StrictUndefined
    assert callable(env.autoescape)
    assert env.autoescape("report.html") and env.autoescape("rubric_compare.html")
    assert not env.autoescape("agreement.md")


def test_chat_text_in_the_report_is_escaped(mock_server: MockServer, tmp_path: Path) -> None:
    # demo-008's customer quotes <script>alert(1)</script>; the judge cites it, and its reasoning and a stored
    # check carry markup too. Every one must reach the page as text, and the page must load nothing.
    rubric = load_rubric(ECOMMERCE)
    reply = {c.id: {"evidence": [], "reasoning": "无", "score": c.points[0]} for c in rubric.criteria()}
    first = rubric.criteria()[0].id
    reply[first] = {"evidence": [{"turn": 1, "quote": "<script>alert(1)</script>"}],
                    "reasoning": "<script>alert(2)</script> & <b>粗体</b>", "score": rubric.criteria()[0].points[0]}
    mock_server.script(Content(text=json.dumps(reply, ensure_ascii=False)))
    out = tmp_path / "out"
    job = CheckJob(inputs=[REPO / "eval_sets/ecommerce_cs.jsonl"], rubric_path=ECOMMERCE,
                   labels_path=REPO / "eval_sets/ecommerce_cs_labels.csv", out_dir=out, repeats=1,
                   only_ids={"demo-008"})
    settings = load_settings(None, {"base_url": mock_server.base_url, "model": "mock-model"}, environ={})
    run = asyncio.run(run_check(job, settings, options=CheckOptions(n_resamples=20)))
    assert len(mock_server.requests) == 1 and run.result.transcripts_labelled == 1
    assert run.result.differences[0].transcript_id == "demo-008"  # lowest levels against mostly full marks
    with Store.open(out) as store:
        meta = store.transcript_meta()["demo-008"]
        store.save_transcript_meta(
            transcript_id="demo-008", content_hash=meta["content_hash"], platform=None, shop=None, agent_id=None,
            started_at=None, n_turns=meta["n_turns"], source=None,
            checks={"columns": {"banned_hits": 1, "phrase_hits": "<script>alert(3)</script>", "closing": None}},
        )
    files = write_report(run.result, out)
    html = files.report_html.read_text(encoding="utf-8")
    assert "<script" not in html.lower()
    for n in (1, 2, 3):
        assert f"&lt;script&gt;alert({n})&lt;/script&gt;" in html
    assert "&amp; &lt;b&gt;粗体&lt;/b&gt;" in html
    assert "banned_hits" in html and "closing</dt>" not in html  # null checks are left out
    # The quote is verbatim in demo-008's first turn, but that is the customer's: no evidence of the agent's greeting.
    assert "（未核实）" in html
    assert not EXTERNAL.search(html)
    assert html.count("<svg") >= 3


def test_agreement_json_writes_nan_as_null_and_reads_it_back(tmp_path: Path) -> None:
    # Every human score the same: Spearman is undefined (NaN) and must round-trip as null.
    result = check_result(JUDGE, [2] * 6)
    files = write_report(result, tmp_path)
    raw = json.loads(files.agreement_json.read_text(encoding="utf-8"))
    assert raw["criteria"][0]["judge_vs_human"]["metrics"]["spearman"]["estimate"] is None
    back = load_result(files.agreement_json)
    assert math.isnan(back.criteria[0].judge_vs_human.metrics.spearman.estimate)
    assert back.model_dump_json() == result.model_dump_json()
    assert not (tmp_path / DB_NAME).exists()  # reporting never creates a store
    # Nested optional models too: three raters give a ceiling and an alt-test with no annotator tested (ω NaN).
    three = check_result(JUDGE, HUMAN, raters=3)
    write_report(three, tmp_path)
    alt = load_result(files.agreement_json).criteria[0].alt_test
    assert alt is not None and math.isnan(alt.winning_rate) and not alt.passed
    assert load_result(files.agreement_json).model_dump_json() == three.model_dump_json()
    md = files.agreement_md.read_text(encoding="utf-8")
    assert all(f"| {cid} |" in md for cid in ("accomplishment", "satisfaction", "efficiency"))


def test_markdown_escapes_data() -> None:
    result = check_result(JUDGE, HUMAN, ["a|b*c", "t1", "t2", "t3", "t4", "t5"])
    assert result.differences and {d.transcript_id for d in result.differences} == {"t1", "t3"}
    md = _environment().get_template("agreement.md").render(
        r=result, criteria=[], sums=[], comparison=None, differences=[], alt_tests=[], ceilings=False,
        sample=SampleSize(n=6, minimum=30), too_few=TOO_FEW, command="kefu check", lang="zh")
    assert "评判模型一致性检查" in md
    assert _environment().filters["md"]("a|b*c\n<x>") == "a\\|b\\*c \\<x\\>"


def test_changes_since_a_previous_check() -> None:
    before = check_result(JUDGE, HUMAN)   # κw 0.75 on six transcripts (see tests/agreement/test_agreement.py)
    now = check_result(HUMAN, HUMAN)      # κw 1 on every resample: its interval is [1, 1]
    item = next(i for i in compare_results(now, before).items if i.item_id == "accomplishment")
    kappa = next(m for m in item.changes if m.metric == "weighted_kappa")
    assert (kappa.before, kappa.now, kappa.delta) == (pytest.approx(0.75), 1.0, pytest.approx(0.25))
    assert kappa.half_width == 0.0 and kappa.beyond_ci  # any change is beyond a zero-width interval
    prev_high = before.criteria[0].judge_vs_human.metrics.weighted_kappa.high
    assert kappa.cis_overlap is (prev_high >= 1.0)
    # The other way round the current interval is the wide one of six transcripts: 0.25 stays inside it.
    back = next(i for i in compare_results(before, now).items if i.item_id == "accomplishment")
    down = next(m for m in back.changes if m.metric == "weighted_kappa")
    wk = before.criteria[0].judge_vs_human.metrics.weighted_kappa
    assert down.delta == pytest.approx(-0.25) and down.half_width == pytest.approx((wk.high - wk.low) / 2)
    assert down.beyond_ci is (down.half_width < 0.25) and not down.beyond_ci
    assert back.verdict_before == "trusted" and back.verdict_now == "review"


def report_cmd(*args: str) -> Result:
    """`kefu report` in-process: the real command function, without paying a Python start-up per call."""
    return CliRunner().invoke(cli_check.app, ["report", *args])


def test_kefu_report_rewrites_with_changes(tmp_path: Path) -> None:
    write_report(check_result(JUDGE, HUMAN), tmp_path / "march")
    write_report(check_result(HUMAN, HUMAN), tmp_path / "april")
    proc = report_cmd(str(tmp_path / "april"), "--compare", str(tmp_path / "march" / "agreement.json"))
    assert proc.exit_code == 0, proc.output
    assert (tmp_path / "april" / "comparison.json").is_file()
    assert "与上一次检查相比" in (tmp_path / "april" / "report.html").read_text(encoding="utf-8")
    assert "| accomplishment | 需复核 → 可信 | +0.25 *" in (tmp_path / "april" / "agreement.md").read_text(
        encoding="utf-8")
    missing = report_cmd(str(tmp_path / "nowhere"))
    assert missing.exit_code == 2 and "agreement.json" in missing.output


def test_rubric_comparison_files(tmp_path: Path) -> None:
    rubric: Rubric = load_rubric(DCH1)
    units = ["<script>x</script>", *UNITS[1:]]
    labels = LabelSet(labels=[Label(transcript_id=u, criterion_id=c.id, score=h, rater_id="qa1")
                              for c in rubric.criteria() for u, h in zip(units, HUMAN, strict=True)])

    def run(judge: list[int]) -> CheckRun:
        scores = {u: {0: {c.id: j for c in rubric.criteria()}} for u, j in zip(units, judge, strict=True)}
        result, per_unit = assess(rubric, labels, scores, options=OPTIONS, repeats=1, model="m", rubric_path="r")
        return CheckRun(result=result, scores=per_unit, out_dir=tmp_path)

    comparison = compare_rubrics(run(JUDGE), run([1, 0, 1, 1, 2, 2]), OPTIONS)
    paths = write_rubric_comparison(comparison, tmp_path)
    assert [p.name for p in paths] == ["rubric_compare.json", "rubric_compare.md", "rubric_compare.html"]
    html = paths[2].read_text(encoding="utf-8")
    assert "&lt;script&gt;x&lt;/script&gt;" in html and "<script" not in html.lower()
    assert "\\<script\\>x" in paths[1].read_text(encoding="utf-8")  # Markdown shows it as text
    # With the chats, each flipped chat's text sits under its row, escaped.
    flipped = {f.transcript_id for s in comparison.criteria for f in s.flips}
    chats = {u: Transcript(id=u, turns=[Turn(role=Role.customer, text=f"<i>{u}</i> 到货了吗")]) for u in flipped}
    html = write_rubric_comparison(comparison, tmp_path, chats=chats)[2].read_text(encoding="utf-8")
    assert flipped and all(str(escape(f"<i>{u}</i> 到货了吗")) in html for u in flipped) and "对话原文" in html
    assert "<script" not in html.lower()


def test_heatmap_shades_by_share_of_the_largest_cell() -> None:
    pair = check_result(JUDGE, HUMAN).criteria[0].judge_vs_human
    cells = heatmap(pair).cells
    assert len(cells) == 25 and max(c.n for c in cells) == 2
    assert {c.fill for c in cells if c.n == 0} == {"rgb(255, 255, 255)"}
    assert {c.fill for c in cells if c.n == 2} == {"rgb(37, 99, 235)"}


def test_reports_show_the_baselines_the_verdict_sentence_and_one_total(tmp_path: Path) -> None:
    result = check_result(JUDGE, HUMAN, raters=3)
    files = write_report(result, tmp_path)
    md = files.agreement_md.read_text(encoding="utf-8")
    assert "total total" not in md and "| 总分 | " in md
    assert "常数基线 κw" in md and "随机抽取基线 κw" in md
    for c in result.criteria:
        assert c.verdict_detail is not None and c.verdict_detail.sentence in md
    html = files.report_html.read_text(encoding="utf-8")
    assert "常数基线 κw" in html and result.criteria[0].verdict_detail.sentence in html  # type: ignore[union-attr]
    assert "评分员的中位等级" in html and "评分员的平均分" in html  # the consensus definitions are named


# --- language and the chat beside the differences ---------------------------------------------------


def test_reports_are_chinese_by_default_and_english_on_request(tmp_path: Path) -> None:
    result = check_result(JUDGE, HUMAN, raters=3)
    write_report(result, tmp_path / "zh")
    md = (tmp_path / "zh" / "agreement.md").read_text(encoding="utf-8")
    assert md.startswith("# 评判模型一致性检查") and "## 各评分项" in md and "这些数字是什么意思" in md
    assert "置信区间：" in md and "加权κ：" in md and "ICC（组内相关系数）" in md
    html = (tmp_path / "zh" / "report.html").read_text(encoding="utf-8")
    assert '<html lang="zh">' in html and "模型与人工分歧最大的对话" in html
    proc = CliRunner().invoke(cli_check.app, ["report", str(tmp_path / "zh"), "--lang", "en"])
    assert proc.exit_code == 0, proc.output
    en = (tmp_path / "zh" / "agreement.md").read_text(encoding="utf-8")
    assert en.startswith("# Judge consistency check") and "What the numbers mean" in en
    detail = result.criteria[0].verdict_detail
    assert detail is not None and detail.sentence not in en  # the reason in English, from the same parts
    assert "ICC: agreement of the totals" in en and '<html lang="en">' in (
        tmp_path / "zh" / "report.html").read_text(encoding="utf-8")


def test_marked_turns_by_hand() -> None:
    chat = Transcript(id="x", turns=[Turn(role=Role.customer, text="在吗 <script>x</script> 在吗"),
                                     Turn(role=Role.agent, text="亲，已发货")])
    turns = marked_turns(chat, [(1, "在吗"), (2, "已发"), (2, "发货"), (3, "no such turn"), (1, "absent")])
    assert turns == [("customer", [("在吗", True), (" <script>x</script> ", False), ("在吗", True)]),
                     ("agent", [("亲，", False), ("已发货", True)])]  # overlapping quotes merge


@given(st.text(max_size=30), st.lists(st.text(min_size=1, max_size=4), max_size=4))
def test_marked_turns_keep_the_text_and_mark_only_quotes(text: str, quotes: list[str]) -> None:
    [(_, pieces)] = marked_turns(Transcript(id="x", turns=[Turn(role=Role.agent, text=text)]),
                                 [(1, q) for q in quotes])
    assert "".join(p for p, _ in pieces) == text
    if not any(q.strip() and q in text for q in quotes):  # nothing quoted verbatim: nothing marked
        assert not any(marked for _, marked in pieces)


def test_the_chat_is_shown_escaped_beside_the_differences(tmp_path: Path) -> None:
    result = check_result(JUDGE, HUMAN)
    chats = {d.transcript_id: Transcript(id=d.transcript_id, turns=[
        Turn(role=Role.customer, text="<script>alert(1)</script>发货了吗"),
        Turn(role=Role.agent, text="亲，已经发货啦")]) for d in result.differences}
    write_report(result, tmp_path, chats=chats)
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;发货了吗" in html and "<script>alert" not in html
    assert "对话原文" in html and "亲，已经发货啦" in html
