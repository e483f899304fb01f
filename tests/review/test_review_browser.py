"""The review workbench used as a person uses it: real headless Chromium (Debian's `chromium`, driven by
Playwright) against the app under uvicorn on 127.0.0.1, over a run graded against the mock server.

Without the browser these tests skip on a workstation and fail in CI (CI=true): `.ci/run` installs it.
Set KEFU_SCREENSHOTS=docs/images to refresh the README's screenshots.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REPO, review_chats
from playwright.sync_api import Browser, Page, expect

from pipeline.outputs.exports import export_run
from pipeline.review.runs import ReviewRun
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860}, locale="zh-CN")
    context.set_default_timeout(10_000)
    opened = context.new_page()
    opened.on("dialog", lambda dialog: pytest.fail(f"unexpected alert: {dialog.message}"))
    yield opened
    context.close()


def shoot(page: Page, name: str, tmp_path: Path) -> None:
    folder = Path(os.environ.get("KEFU_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"review_{name}.png"))


def set_reviewer(page: Page, name: str) -> None:
    page.fill("#reviewer", name)
    page.locator("#reviewer").blur()  # typed once: kept for the next pages (localStorage)


def test_overview_filters_and_a_chat_shows_its_evidence(page: Page, live_server: str, tmp_path: Path) -> None:
    # The mock judge picks its quotes' turns by chance: take a plain chat where one landed on the turn it quotes.
    with httpx.Client(base_url=live_server) as http:
        chats = [http.get(f"/api/chats/{c.id}").json() for c in review_chats()[:8]]
    chat = next(c for c in chats if any(e["located"] for k in c["repeats"][0]["criteria"] for e in k["evidence"]))
    quote = next(e for k in chat["repeats"][0]["criteria"] for e in k["evidence"] if e["located"])

    page.goto(live_server + "/")
    expect(page.locator("#total-chats")).to_have_text(str(len(review_chats())))
    shoot(page, "overview", tmp_path)
    page.select_option("select[name=agent]", chat["agent_id"])
    page.click("#apply-filters")
    expect(page.locator("#total-chats")).to_have_text("4")  # kf-1: r00, r02, r04, r06; kf-2: the odd ones
    agents = page.locator("#chats tbody tr td:nth-child(3)").all_inner_texts()
    assert len(agents) == 8 and set(agents) == {chat["agent_id"]}  # two repeats each
    page.locator("a.chat-link", has_text=chat["transcript_id"]).first.click()
    expect(page.locator("#chat-id")).to_have_text(chat["transcript_id"])
    # Quotes the grader verified are highlighted in the transcript; the others are listed as unverified.
    marked = page.locator(f"#turn-{quote['turn']} mark.evidence").all_inner_texts()
    assert quote["quote"] in "".join(marked)
    expect(page.locator(".evidence li.unverified").first).to_contain_text("未核实")
    # r06: the banned bare 嗯 and the reply 12 minutes late are marked.
    page.goto(live_server + "/chats/r06")
    expect(page.locator("#turn-4 mark.banned")).to_have_text("嗯")
    expect(page.locator("#turn-4 .wait.breach")).to_contain_text("超时")
    shoot(page, "chat", tmp_path)


def test_a_queue_labelled_with_the_keyboard_is_what_kefu_check_reads(page: Page, live_server: str,
                                                                      reviewed_run: Path, tmp_path: Path) -> None:
    page.goto(live_server + "/queue?n=3&seed=7&mode=random")
    set_reviewer(page, "张三")
    first = page.locator("#labelling").get_attribute("data-transcript")
    criteria = page.locator(".label-criterion").count()
    assert page.locator(".judge").count() == 0  # blind by default
    for done in range(1, criteria + 1):
        page.keyboard.press("1")  # the lowest level; saved at once, then the next criterion is active
        expect(page.locator(".label-criterion.done")).to_have_count(done)
        if done == 3:
            shoot(page, "queue", tmp_path)
    page.keyboard.press("n")
    expect(page.locator("#queue-position")).to_have_text("2")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("2")
    expect(page.locator(".label-criterion.done")).to_have_count(1)

    with Store.open(reviewed_run) as store:
        labels = store.labels()
    rubric = ReviewRun(reviewed_run).rubric
    lowest = {c.id: c.points[0] for c in rubric.criteria()}
    assert len(labels) == criteria + 1 and {r.rater_id for r in labels} == {"张三"}
    assert {(r.criterion_id, r.score) for r in labels if r.transcript_id == first} == set(lowest.items())

    # `kefu check --labels OUT` takes the run folder's labels as the human labels.
    src = _source_file(reviewed_run)
    check = tmp_path / "check"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_"))}
    with MockServer() as server:
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test-secret-123456"}
        done = subprocess.run([sys.executable, "-m", "pipeline", "check", src, "--labels", str(reviewed_run),
                               "--out", str(check), "--repeats", "1"], env=env, cwd=REPO, capture_output=True,
                              text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    result = json.loads((check / "agreement.json").read_text(encoding="utf-8"))
    assert result["raters"] == ["张三"] and result["labels"] == criteria + 1 and result["label_rejects"] == 0
    assert result["transcripts_labelled"] == 2


def test_a_low_agreement_queue_created_in_the_form_labels_only_its_criteria(page: Page, live_server: str,
                                                                           reviewed_run: Path) -> None:
    rubric = ReviewRun(reviewed_run).rubric
    named = [c for c in rubric.criteria()][3:5]
    page.goto(live_server + "/queue")
    set_reviewer(page, "李四")
    page.select_option("select[name=mode]", "low_agreement")
    page.fill("input[name=criteria]", ",".join(c.id for c in named))
    page.fill("input[name=seed]", "11")
    page.click("form.filters button[type=submit]")
    expect(page.locator("#low-agreement")).to_contain_text("按指定")
    expect(page.locator(".label-criterion")).to_have_count(2)
    first = page.locator("#labelling").get_attribute("data-transcript")
    page.keyboard.press("1")  # saved at once; then the next criterion is active
    expect(page.locator(".label-criterion.done")).to_have_count(1)
    page.keyboard.press("2")
    expect(page.locator(".label-criterion.done")).to_have_count(2)
    page.keyboard.press("n")
    expect(page.locator("#queue-position")).to_have_text("2")

    with Store.open(reviewed_run) as store:
        labels = store.labels()
    assert {(r.transcript_id, r.criterion_id, r.score, r.rater_id) for r in labels} == {
        (first, named[0].id, named[0].points[0], "李四"), (first, named[1].id, named[1].points[1], "李四")}


def _source_file(run: Path) -> str:
    with Store.open(run) as store:
        row = store.transcript_row("r01")
    assert row is not None and row.source is not None
    return row.source.rsplit(":", 1)[0]


def test_a_dispute_opened_and_resolved_in_the_browser_reaches_the_export(page: Page, live_server: str,
                                                                          reviewed_run: Path, tmp_path: Path) -> None:
    page.goto(live_server + "/chats/r02")
    set_reviewer(page, "张三")
    greeting = page.locator("#crit-0-greeting")
    llm = int(greeting.locator(".final-score").inner_text())
    decided = 0 if llm != 0 else 3
    greeting.locator("input[name=reason]").fill("客服没有使用招呼语")
    greeting.locator("button[type=submit]").click()
    expect(page.locator("#dispute-table tr.dispute.open")).to_have_count(1)

    page.goto(live_server + "/disputes?status=open")
    set_reviewer(page, "组长")
    row = page.locator("tr.dispute.open").first
    row.locator("select[name=final_score]").select_option(str(decided))
    row.locator("input[name=note]").fill("核实后改判")
    shoot(page, "disputes", tmp_path)
    row.locator("button[type=submit]").click()
    expect(page.locator("tr.dispute.open")).to_have_count(0)  # the page reloads without it
    page.goto(live_server + "/disputes")
    expect(page.locator("tr.dispute.resolved")).to_have_count(1)
    expect(page.locator("tr.dispute.resolved")).to_contain_text("组长：核实后改判")

    page.goto(live_server + "/chats/r02")
    expect(page.locator("#crit-0-greeting .final-score")).to_have_text(str(decided))
    with Store.open(reviewed_run) as store:
        paths = export_run(store, ReviewRun(reviewed_run).rubric, "csv", tmp_path / "export")
    rows = [r for r in csv.DictReader(paths[0].open(encoding="utf-8-sig")) if r["transcript_id"] == "r02"]
    assert [r["greeting"] for r in rows] == [str(decided)] * 2
    grades = [r for r in csv.DictReader(paths[1].open(encoding="utf-8-sig"))
              if r["transcript_id"] == "r02" and r["criterion_id"] == "greeting"]
    assert {(r["score"], r["llm_score"]) for r in grades} == {(str(decided), str(llm))}
