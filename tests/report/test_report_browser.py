"""The check reports as a reader opens them: real headless Chromium (Debian's `chromium`, driven by
Playwright) loading each page from file://. Each page must load nothing beyond itself, draw its Chinese
with a CJK font (not tofu), show its charts, keep chat text as text and highlight the judge's evidence in
the chat beside "where judge and human differ most".

Without the browser these tests skip on a workstation and fail in CI (CI=true): `.ci/run` installs it
with fonts-noto-cjk.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, ReportPages
from playwright.sync_api import Browser, Page, Route

from pipeline.consistency.job import CheckJob, read_chats, run_check
from pipeline.consistency.results import CheckOptions
from pipeline.grading.settings import load_settings
from pipeline.report.messages import Lang
from pipeline.report.render import write_report
from pipeline.rubric.load import load_rubric
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content

ECOMMERCE = REPO / "rubric" / "ecommerce_cs.yaml"
QUOTE = "<script>alert(1)</script>"
"""What demo-008's customer writes, and what the scripted judge quotes as its evidence."""


class Opened:
    """A page opened from file://, with every request it made."""

    def __init__(self, page: Page, url: str) -> None:
        self.page, self.url = page, url
        self.requests: list[str] = []


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[[Path], Opened]]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    context.set_default_timeout(10_000)

    def open_file(path: Path) -> Opened:
        page = context.new_page()
        page.on("dialog", lambda dialog: pytest.fail(f"a script ran: {dialog.message}"))
        opened = Opened(page, path.resolve().as_uri())

        def route(r: Route) -> None:
            opened.requests.append(r.request.url)
            if r.request.url == opened.url:
                r.continue_()
            else:
                r.abort()  # the page must not need it: blocked, and recorded to fail the test

        page.route("**/*", route)
        page.goto(opened.url, wait_until="load")
        return opened

    yield open_file
    context.close()


def cjk_fonts(page: Page, selector: str) -> list[str]:
    """The platform fonts Chromium actually drew the first `selector` element's text with (DevTools protocol)."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument")["root"]["nodeId"]
    node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return [f["familyName"] for f in fonts if f["glyphCount"]]


TOFU_CHECK = """([text, family]) => {
  // Each character drawn alone: real glyphs of different characters differ, while missing ones all draw the
  // same box ("tofu"), like a private-use character no font has.
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = 40;
  const ctx = canvas.getContext("2d");
  const draw = (ch) => {
    ctx.clearRect(0, 0, 40, 40);
    ctx.font = `28px ${family}`;
    ctx.fillText(ch, 4, 32);
    return Array.from(ctx.getImageData(0, 0, 40, 40).data).join(",");
  };
  const tofu = draw("\\uE000");
  const glyphs = [...text].map(draw);
  return {distinct: new Set(glyphs).size, tofu: glyphs.filter((g) => g === tofu).length,
          empty: glyphs.filter((g) => !/[^0,]/.test(g)).length};
}"""


def assert_readable(opened: Opened) -> None:
    """Self-contained, Chinese drawn in a CJK font, charts with a size, and no script at all."""
    page = opened.page
    assert opened.requests == [opened.url]  # nothing but the file itself
    heading = page.locator("h1")
    box = heading.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0
    assert any("CJK" in f for f in cjk_fonts(page, "h1")), cjk_fonts(page, "h1")
    family = page.evaluate("getComputedStyle(document.querySelector('h1')).fontFamily")
    drawn = page.evaluate(TOFU_CHECK, ["一致性评判模型", family])
    assert drawn == {"distinct": 7, "tofu": 0, "empty": 0}
    for svg in page.locator("svg.chart, svg.heatmap, svg.dist").all():
        if svg.is_visible():  # the ones in a closed <details> are drawn when opened
            size = svg.bounding_box()
            assert size is not None and size["width"] > 50 and size["height"] > 20
            assert svg.locator("circle, rect, line").count() > 0
    assert page.evaluate("document.scripts.length") == 0


def test_every_report_page_is_self_contained_chinese_with_charts(
        open_page: Callable[[Path], Opened], report_pages: dict[Lang, ReportPages]) -> None:
    paths = [p for p in report_pages["zh"].paths if p.suffix == ".html"]
    assert {p.name for p in paths} == {"report.html", "history.html", "rubric_compare.html"}
    charts = 0
    for path in paths:
        opened = open_page(path)
        assert_readable(opened)
        charts += opened.page.locator("svg.chart:visible, svg.heatmap:visible, svg.dist:visible").count()
    assert charts >= 10  # kappa, bias, heatmaps and distributions per report; one chart per criterion over time


def test_differ_most_shows_the_chat_as_text_with_the_evidence_marked(
        open_page: Callable[[Path], Opened], mock_server: MockServer, tmp_path: Path) -> None:
    # demo-008's customer writes <script>alert(1)</script>; the judge quotes it as evidence.
    rubric = load_rubric(ECOMMERCE)
    reply = {c.id: {"evidence": [], "reasoning": "无", "score": c.points[0]} for c in rubric.criteria()}
    first = rubric.criteria()[0]
    reply[first.id] = {"evidence": [{"turn": 1, "quote": QUOTE}], "reasoning": "<b>粗体</b>", "score": first.points[0]}
    mock_server.script(Content(text=json.dumps(reply, ensure_ascii=False)))
    job = CheckJob(inputs=[REPO / "eval_sets/ecommerce_cs.jsonl"], rubric_path=ECOMMERCE,
                   labels_path=REPO / "eval_sets/ecommerce_cs_labels.csv", out_dir=tmp_path, repeats=1,
                   only_ids={"demo-008"})
    settings = load_settings(None, {"base_url": mock_server.base_url, "model": "mock-model"}, environ={})
    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API holds this thread's event loop
        run = thread.submit(asyncio.run, run_check(job, settings, options=CheckOptions(n_resamples=20))).result()
    files = write_report(run.result, tmp_path, chats=read_chats(job, {"demo-008"}))

    opened = open_page(files.report_html)
    assert_readable(opened)
    page = opened.page
    listed = page.locator("details.difference").first
    assert "demo-008" in listed.locator("summary").first.inner_text()
    chat = listed.locator(".chat")
    assert chat.is_visible() and QUOTE in chat.inner_text()  # the chat's markup is shown as its text
    marked = chat.locator("mark")
    assert marked.count() == 1 and marked.inner_text() == QUOTE and marked.is_visible()
    background = marked.evaluate("m => getComputedStyle(m).backgroundColor")
    assert background == "rgb(253, 230, 138)"  # the highlight's yellow
    assert listed.locator("blockquote").first.inner_text().endswith(QUOTE + " （未核实）")
    assert "<b>粗体</b>" in listed.inner_text()  # the judge's reasoning too
