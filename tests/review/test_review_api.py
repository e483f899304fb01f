"""The review workbench's JSON API, its safety rules and how human decisions reach the exports.

The run is graded by the real pipeline against the loopback mock server (tests/conftest.py). API calls
go through Starlette's TestClient, except one test that talks to a real uvicorn server on 127.0.0.1.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import httpx
from conftest import HOSTILE, grade_run, review_chats
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from markupsafe import escape
from starlette.testclient import TestClient
from typer.testing import CliRunner

from pipeline.cli.main import app as cli_app
from pipeline.inputs.labels import read_label_source, read_labels
from pipeline.models.grade import CriterionGrade, Grade
from pipeline.outputs.exports import export_run, refresh_outputs
from pipeline.outputs.headings import summary_headings
from pipeline.outputs.summary import rate_text, summarize_run
from pipeline.review import create_app
from pipeline.review.calibration import JUDGE, calibrate
from pipeline.review.runs import ReviewRun
from pipeline.store.store import Store

LOCAL = "http://127.0.0.1"


def client(run: Path, token: str | None = None, base_url: str = LOCAL) -> TestClient:
    return TestClient(create_app([run], token=token), base_url=base_url)


def test_chat_api_returns_the_chat_its_grades_checks_and_people(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    body = api.get("/api/chats/r06").json()
    assert body["transcript_id"] == "r06" and body["agent_id"] == "kf-1" and body["text_available"]
    assert [t["number"] for t in body["turns"]] == [1, 2, 3, 4]
    agent_text = "亲，您好，已为您核实 order 1234：物流延迟，退款已处理，好的"
    assert "".join(s["text"] for s in body["turns"][1]["segments"]) == agent_text
    # r06's last reply came 12 minutes late: its wait is marked as a breach; the bare 嗯 is a banned phrase.
    assert body["turns"][3]["breach"] and body["turns"][3]["wait_s"] == 730.0
    assert any("banned" in s["marks"] for s in body["turns"][3]["segments"])
    assert [r["repeat"] for r in body["repeats"]] == [0, 1]
    first = body["repeats"][0]
    assert len(first["criteria"]) == 13 and body["checks"]["banned_hits"] == 1
    # The cap on proactivity (a wait over 10 minutes) shows as an adjustment, the LLM's score beside it.
    proactivity = next(c for c in first["criteria"] if c["id"] == "proactivity")
    assert proactivity["final_score"] == 0 and (proactivity["llm_score"] == 0 or proactivity["adjustment"])
    assert body["labels"] == [] and body["disputes"] == []
    # Every quote the judge got right is marked where it stands; the others are listed as unverified only.
    # (The mock judge picks its quotes' turns by chance: over the 9 chats some land on the turn they quote.)
    chats = [api.get(f"/api/chats/{c.id}").json() for c in review_chats()]
    located_anywhere = 0
    for chat in chats:
        evidence = [e for c in chat["repeats"][0]["criteria"] for e in c["evidence"]]
        assert all(e["verified"] for e in evidence if e["located"])
        for turn, quote in {(e["turn"], e["quote"]) for e in evidence if e["located"]}:
            segments = chat["turns"][turn - 1]["segments"]  # the quote's characters all lie in marked segments
            assert quote in "".join(s["text"] if "evidence" in s["marks"] else "\0" for s in segments)
            located_anywhere += 1
    assert located_anywhere and any(not e["verified"] for c in chats for r in c["repeats"] for k in r["criteria"]
                                    for e in k["evidence"])
    assert api.get("/api/chats/nope").status_code == 404


def test_labels_are_saved_checked_and_exported_as_the_long_csv(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    ok = api.post("/api/labels", json={"transcript_id": "r01", "criterion_id": "greeting", "score": 3,
                                       "rater_id": "张三"})
    assert ok.status_code == 201 and ok.json()["rubric_id"] == "ecommerce_cs"
    api.post("/api/labels", json={"transcript_id": "r01", "criterion_id": "greeting", "score": 1, "rater_id": "李四"})
    api.post("/api/labels", json={"transcript_id": HOSTILE and f"x{HOSTILE}", "criterion_id": "closing",
                                  "score": 0, "rater_id": "李四"})
    bad = {
        "transcript_id": ("zz", "未知会话：'zz'"),
        "criterion_id": ("nope", "未知评分项：'nope'"),
        "score": (2, "分数 2 不是评分项 招呼语（greeting）的档位，可选：0、1、3"),
    }
    for field, (value, message) in bad.items():
        body = {"transcript_id": "r01", "criterion_id": "greeting", "score": 1, "rater_id": "张三", field: value}
        answer = api.post("/api/labels", json=body)
        assert answer.status_code == 422 and message in answer.json()["detail"]
    missing = api.post("/api/labels", json={"transcript_id": "r01", "score": 1, "rater_id": "张三"})
    assert missing.status_code == 422 and "criterion_id：缺少此字段" in missing.json()["detail"]

    text = api.get("/api/labels.csv").text
    assert next(csv.reader(io.StringIO(text))) == ["transcript_id", "criterion_id", "score", "rater_id", "labelled_at"]
    exported = reviewed_run / "labels.csv"
    exported.write_text(text, encoding="utf-8")
    rubric = ReviewRun(reviewed_run).rubric
    from_csv = read_labels(exported, rubric)
    from_folder = read_label_source(reviewed_run, rubric)  # what `kefu check --labels OUT` reads
    assert from_csv.rejects == [] and from_folder.rejects == []
    assert from_csv.labels == from_folder.labels
    assert {(x.transcript_id, x.rater_id, x.score) for x in from_folder.labels} == {
        ("r01", "张三", 3), ("r01", "李四", 1), (f"x{HOSTILE}", "李四", 0)}


def test_a_resolved_dispute_is_the_final_score_everywhere_and_survives_a_rerun(reviewed_run: Path,
                                                                              tmp_path: Path) -> None:
    api = client(reviewed_run)
    before = {c["id"]: c for c in api.get("/api/chats/r02").json()["repeats"][0]["criteria"]}
    llm = before["greeting"]["llm_score"]
    decided = 0 if llm != 0 else 3
    opened = api.post("/api/disputes", json={"transcript_id": "r02", "criterion_id": "greeting",
                                             "reason": "客服没有打招呼", "opened_by": "张三"})
    assert opened.status_code == 201
    dispute = opened.json()["id"]
    assert [d["id"] for d in api.get("/api/disputes?status=open").json()] == [dispute]
    wrong = api.post(f"/api/disputes/{dispute}/resolve", json={"final_score": 2, "resolved_by": "组长", "note": "x"})
    assert wrong.status_code == 422
    done = api.post(f"/api/disputes/{dispute}/resolve",
                    json={"final_score": decided, "resolved_by": "组长", "note": "核实后改判"})
    assert done.status_code == 200 and done.json()["status"] == "resolved"
    again = api.post(f"/api/disputes/{dispute}/resolve", json={"final_score": 1, "resolved_by": "组长", "note": "x"})
    assert again.status_code == 422 and "已处理" in again.json()["detail"]

    frame = ReviewRun(reviewed_run).overview_index()  # the overview's table, with the decision
    assert list(frame.loc[frame["transcript_id"] == "r02", "c:greeting"]) == [decided, decided]
    assert list(frame.loc[frame["transcript_id"] == "r02", "llm:greeting"]) == [llm, llm]
    assert "/chats/r02?" in api.get(f"/?criterion=greeting&score={decided}").text
    after = {c["id"]: c for c in api.get("/api/chats/r02").json()["repeats"][1]["criteria"]}
    assert after["greeting"]["final_score"] == decided and after["greeting"]["llm_score"] == llm
    assert "组长: 核实后改判" in after["greeting"]["adjustment"]

    def check_files(folder: Path) -> None:
        scores = csv.DictReader((folder / "scores.csv").open(encoding="utf-8-sig"))
        rows = [r for r in scores if r["transcript_id"] == "r02"]
        assert [r["greeting"] for r in rows] == [str(decided)] * 2
        lines = [json.loads(x) for x in (folder / "grades.jsonl").open(encoding="utf-8")]
        mine = [x for x in lines if x["transcript_id"] == "r02" and x["criterion_id"] == "greeting"]
        assert [(x["score"], x["llm_score"]) for x in mine] == [(decided, llm)] * 2

    with Store.open(reviewed_run) as store:
        rubric = ReviewRun(reviewed_run).rubric
        assert refresh_outputs(store, rubric, reviewed_run).written  # the resolution moved the change counter
        export_run(store, rubric, "csv", tmp_path / "export")
        groups = summarize_run(store, rubric, "agent")
    check_files(reviewed_run)
    export = {r["transcript_id"] + r["repeat"]: r for r in csv.DictReader(
        (tmp_path / "export" / "scores.csv").open(encoding="utf-8-sig"))}
    assert export["r020"]["greeting"] == str(decided)
    assert sum(g.transcripts for g in groups) == len(review_chats())
    # A rerun of `kefu grade` into the same folder (same chats: nothing to grade) rewrites the files
    # and keeps the decision.
    (reviewed_run / "scores.csv").unlink()
    assert grade_run(tmp_path, review_chats(), "--repeats", "2") == reviewed_run
    check_files(reviewed_run)


def test_hostile_ids_and_text_are_text_in_every_page(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    api.post("/api/disputes", json={"transcript_id": f"x{HOSTILE}", "criterion_id": "closing",
                                    "reason": HOSTILE, "opened_by": HOSTILE})
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    for url in ["/", f"/chats/x{HOSTILE}", "/disputes", "/?agent=" + f"kf{HOSTILE}"]:
        page = api.get(url)
        assert page.status_code == 200, url
        assert HOSTILE not in page.text and escaped in page.text, url
    queue = [api.get(f"/queue?n=20&blind=0&i={i}").text for i in range(len(review_chats()))]
    assert not any(HOSTILE in page for page in queue)
    assert sum(escaped in page for page in queue) == 1  # the hostile chat's own page


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(score=st.integers(-5, 15), criterion=st.sampled_from(["greeting", "proactivity", "tmall_rules"]))
def test_a_label_is_saved_exactly_when_its_score_is_a_level(reviewed_run: Path, score: int, criterion: str) -> None:
    levels = ReviewRun(reviewed_run).criteria[criterion].points
    answer = client(reviewed_run).post("/api/labels", json={"transcript_id": "r01", "criterion_id": criterion,
                                                            "score": score, "rater_id": "张三"})
    assert answer.status_code == (201 if score in levels else 422)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(alphabet=st.sampled_from("<>&\"'/ascript=亲\n"), min_size=1, max_size=40).filter(str.strip))
def test_any_reason_is_shown_as_text(reviewed_run: Path, reason: str) -> None:
    api = client(reviewed_run)
    opened = api.post("/api/disputes", json={"transcript_id": "r01", "criterion_id": "greeting", "reason": reason,
                                             "opened_by": "张三"})
    assert opened.status_code == 201
    page = api.get("/disputes").text
    assert str(escape(reason.strip())) in page


def test_off_loopback_every_request_needs_the_token(reviewed_run: Path) -> None:
    api = client(reviewed_run, token="s3cret-token", base_url="http://192.0.2.10:8765")
    assert api.get("/").status_code == 401
    assert api.get("/api/labels.csv").status_code == 401
    assert api.get("/api/chats/r01", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert api.get("/api/chats/r01", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    first = api.get("/?token=s3cret-token")  # the printed link: sets the cookie the pages then use
    assert first.status_code == 200 and "kefu_token=s3cret-token" in first.headers["set-cookie"]
    assert "HttpOnly" in first.headers["set-cookie"] and "SameSite=Strict" in first.headers["set-cookie"]
    assert api.get("/disputes").status_code == 200  # the cookie, kept by the client


def test_changes_from_another_site_are_refused(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    body = {"transcript_id": "r01", "criterion_id": "greeting", "score": 1, "rater_id": "张三"}
    assert api.post("/api/labels", json=body, headers={"Origin": "http://evil.example"}).status_code == 403
    assert api.post("/api/labels", json=body, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    form = api.post("/api/labels", content="transcript_id=r01", headers={"Content-Type": "text/plain"})
    assert form.status_code == 415
    assert api.post("/api/labels", json=body, headers={"Origin": LOCAL}).status_code == 201
    # Bound to loopback, a request naming another host (DNS rebinding) is refused.
    assert client(reviewed_run, base_url="http://attacker.example").get("/").status_code == 421
    with Store.open(reviewed_run) as store:
        assert len(store.labels()) == 1


def test_a_real_server_serves_pages_and_saves_labels(live_server: str) -> None:
    with httpx.Client(base_url=live_server) as http:
        assert "总览" in http.get("/").text
        assert http.get("/static/review.js").status_code == 200
        saved = http.post("/api/labels", json={"transcript_id": "r05", "criterion_id": "closing", "score": 3,
                                               "rater_id": "王五"})
        assert saved.status_code == 201
        assert "r05,closing,3,王五," in http.get("/api/labels.csv").text


def test_calibration_compares_reviewers_with_each_other_and_the_judge(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    chats = ["r00", "r01", "r02", "r03"]
    for rater, scores in (("甲", [0, 1, 3, 3]), ("乙", [0, 1, 3, 1])):
        for tid, score in zip(chats, scores, strict=True):
            assert api.post("/api/labels", json={"transcript_id": tid, "criterion_id": "greeting", "score": score,
                                                 "rater_id": rater}).status_code == 201
    (greeting,) = calibrate(ReviewRun(reviewed_run))
    assert greeting.raters == ["乙", "甲", JUDGE]
    assert greeting.agreement is not None
    pairs = {(p.rater, p.other): p for p in greeting.agreement.comparisons}
    # 乙 and 甲 agree on 3 of 4 chats (r03: 1 against 3, one level apart on 0/1/3): exact 0.75, adjacent 1.0,
    # bias 乙 − 甲 = (0 + 0 + 0 − 2) / 4 = −0.5.
    humans = pairs[("乙", "甲")]
    assert (humans.n, humans.metrics.exact, humans.metrics.adjacent, humans.metrics.bias) == (4, 0.75, 1.0, -0.5)
    judge = [next(c["llm_score"] for c in api.get(f"/api/chats/{t}").json()["repeats"][0]["criteria"]
                  if c["id"] == "greeting") for t in chats]
    expected = sum(j == h for j, h in zip(judge, [0, 1, 3, 3], strict=True)) / 4
    assert pairs[("甲", JUDGE)].metrics.exact == expected
    assert [d.transcript_id for d in greeting.differences] == [
        t for t, a, b, j in zip(chats, [0, 1, 3, 3], [0, 1, 3, 1], judge, strict=True) if len({a, b, j}) > 1]
    page = api.get("/calibration").text
    assert 'data-pair="乙|甲"' in page and "0.75" in page


def test_bad_page_parameters_get_a_message_not_a_crash(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    bad = api.get("/?min_total=abc")
    assert bad.status_code == 400 and "min_total：须为整数" in bad.text
    assert api.get("/queue?mode=everything").status_code == 400
    assert api.get("/?offset=x").status_code == 200 and api.get("/queue?i=-1").status_code == 200
    assert api.get("/?run=7").status_code == 404


def _overview_groups(page: str) -> dict[str, list[str]]:
    """The overview's per-group table: group → its cells' text."""
    table = page[page.index('id="groups"'):]
    table = table[:table.index("</table>")]
    rows = {}
    for row in re.findall(r"<tr><td>(.*?)</tr>", table, re.S):
        cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.split(r"</td>\s*<td[^>]*>", row)]
        rows[cells[0]] = [c.removesuffix("</td>").strip() for c in cells]
    return rows


def _summary_csv(run: Path, by: str) -> dict[str, dict[str, str]]:
    """`kefu summary OUT --by BY`'s CSV, keyed by group, with the column ids as keys."""
    done = CliRunner().invoke(cli_app, ["summary", str(run), "--by", by])
    assert done.exit_code == 0, done.output
    rubric = ReviewRun(run).rubric
    ids = {heading: key for key, heading in summary_headings(rubric, by).items()}
    with (run / f"summary_by_{by}.csv").open(encoding="utf-8-sig") as fh:
        return {r[summary_headings(rubric, by)[by]]: {ids[k]: v for k, v in r.items()} for r in csv.DictReader(fh)}


def _expected_cells(row: dict[str, str]) -> list[str]:
    """The overview's cells for one `kefu summary` row: counts, the mean total, the rates as `rate_text` writes them."""
    passed = {"是": True, "否": False, "": None}

    def rate(part: str, whole: str, verdict: str) -> str:
        return rate_text(int(part), int(whole), passed[verdict])

    banned = "—" if not row["banned_rate"] else f"{float(row['banned_rate']):.4f}"
    return [row["transcripts"], f"{float(row['mean_total']):.2f}" if row["mean_total"] else "—",
            row["critical_failed"], row["needs_review"],
            rate(row["first_replies_within"], row["first_reply_sessions"], row["first_reply_pass"]),
            rate(row["reply_rate_within"], row["reply_rate_of"], row["reply_pass"]),
            rate(row["satisfied_sessions"], row["rated_sessions"], row["satisfaction_pass"]), banned]


def _as_compared(cells: list[str]) -> list[str]:
    """The overview's cells with the banned-phrase rate as the CSV's 4-decimal share (the page shows part/whole)."""
    found = re.search(r"\((\d+)/(\d+)\)", cells[-1])
    banned = "—" if found is None else f"{round(int(found[1]) / int(found[2]), 4):.4f}"
    return [*cells[:-1], banned]


def test_the_overview_shows_kefu_summarys_figures_with_filters_and_decisions(reviewed_run: Path) -> None:
    api = client(reviewed_run)
    # A resolved dispute moves a kf-1 chat's total: both must count the final score. The mock's repeats draw
    # from one seeded stream in arrival order, so which chat can move is found, not assumed: a scored repeat
    # without a critical failure, and a criterion whose final score (after caps) is above the lowest level.
    run = ReviewRun(reviewed_run)
    index = run.overview_index()
    chat, criterion = next(
        (tid, c) for tid in sorted(set(index.loc[index["agent"] == "kf-1", "transcript_id"]))
        for r in api.get(f"/api/chats/{tid}").json()["repeats"] if r["status"] == "scored" and not r["critical_failed"]
        for c in run.rubric.criteria() if {v["id"]: v["final_score"] for v in r["criteria"]}[c.id] != c.points[0])
    before = _summary_csv(reviewed_run, "agent")
    opened = api.post("/api/disputes", json={"transcript_id": chat, "criterion_id": criterion.id,
                                             "reason": "复核", "opened_by": "张三"}).json()
    assert api.post(f"/api/disputes/{opened['id']}/resolve", json={
        "final_score": criterion.points[0], "resolved_by": "组长", "note": "改判"}).status_code == 200
    after = _summary_csv(reviewed_run, "agent")
    assert after["kf-1"]["mean_total"] != before["kf-1"]["mean_total"]

    for by in ("agent", "shop", "day", "platform"):
        summary = _summary_csv(reviewed_run, by)
        page = _overview_groups(api.get(f"/?by={by}").text)
        assert {g: _as_compared(cells[1:]) for g, cells in page.items()} == {
            (g or "（未知）"): _expected_cells(row) for g, row in summary.items()}
    # Filtered to one agent, the overview's row is that agent's row of the summary.
    page = _overview_groups(api.get("/?agent=kf-1&by=agent").text)
    assert list(page) == ["kf-1"] and _as_compared(page["kf-1"][1:]) == _expected_cells(after["kf-1"])


def test_the_overview_is_current_when_a_grade_is_written_behind_it(reviewed_run: Path) -> None:
    run = ReviewRun(reviewed_run)
    api = client(reviewed_run)
    assert len(run.overview_index().query("transcript_id == 'r03'")) == 2
    lowest = [CriterionGrade(criterion_id=c.id, score=c.points[0]) for c in run.rubric.criteria()]
    with Store.open(reviewed_run) as store:  # as a concurrent `kefu grade` would
        last = store.last_run()
        assert last is not None
        store.save_grade(Grade(key="late", transcript_id="r03", repeat=2, scope="all", status="scored",
                               criteria=lowest, model="m", attempts=1, created_at=datetime.now(UTC)),
                         int(last["id"]), run.rubric_hash)
    rows = run.overview_index().query("transcript_id == 'r03'")
    assert list(rows["repeat"]) == [0, 1, 2]
    assert [rows.iloc[2][f"llm:{c.id}"] for c in run.rubric.criteria()] == [c.points[0] for c in run.rubric.criteria()]
    assert "/chats/r03?" in api.get(f"/?max_total={sum(c.points[0] for c in run.rubric.criteria())}").text
