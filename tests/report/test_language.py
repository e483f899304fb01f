"""Every report kind reads in Chinese by default: no English word outside the allowlist (statistical symbols,
ids, file and command names), and English with `lang="en"`."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from conftest import ReportPages

from pipeline.report.messages import Lang

ALLOWED_WORDS = {
    "ICC", "UTC", "A", "B", "n", "p", "q", "v",  # statistics' symbols, wording A/B, versions
    "kefu",  # the tool's name
    "Calderon", "Reichart", "Dror", "ACL", "FDR", "Krippendorff",  # the alt-test's authors and venue, names
}
"""Latin words a Chinese report may hold besides ids, file names and command names (removed before the scan)."""
ALLOWED_PATTERNS = [
    r"κw", r"kefu [a-z]+", r"--[a-z-]+",  # the weighted-kappa symbol; commands and their options
    r"[\w.-]+\.(?:json|jsonl|html|md|yaml|csv)\b", r"(?:/[\w.-]+)+",  # file names and paths
]


class _Visible(HTMLParser):
    """The text a reader sees or hovers: text nodes (not styles) and title / aria-label attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._skip += tag == "style"
        self.parts += [v for k, v in attrs if k in ("title", "aria-label", "alt") and v]

    def handle_endtag(self, tag: str) -> None:
        self._skip -= tag == "style"

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def visible_text(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".html":
        parser = _Visible()
        parser.feed(text)
        return "\n".join(parser.parts)
    return re.sub(r"`[^`]*`", " ", text)  # Markdown code spans hold ids and commands


def english_words(text: str, data: list[str]) -> set[str]:
    """The Latin words left once data strings (ids, paths, names) and allowed patterns are taken out."""
    text = text.replace("\\", "")  # Markdown's escapes of data
    for value in sorted(data, key=len, reverse=True):
        text = re.sub(rf"(?<![\w.-]){re.escape(value)}(?![\w-])", " ", text)
    for pattern in ALLOWED_PATTERNS:
        text = re.sub(pattern, " ", text)
    return {w for w in re.findall(r"[A-Za-z][A-Za-z']*", text) if w not in ALLOWED_WORDS}


def test_every_report_kind_is_chinese_by_default(report_pages: dict[Lang, ReportPages]) -> None:
    paths, data = report_pages["zh"]
    assert {p.name for p in paths} == {"agreement.md", "report.html", "history.md", "history.html",
                                       "rubric_compare.md", "rubric_compare.html"}
    found = {p.parent.name + "/" + p.name: words for p in paths if (words := english_words(visible_text(p), data))}
    assert found == {}


def test_english_on_request(report_pages: dict[Lang, ReportPages]) -> None:
    paths, _ = report_pages["en"]
    text = {p.parent.name + "/" + p.name: visible_text(p) for p in paths}
    assert "Per criterion" in text["1/report.html"] and "What the numbers mean" in text["1/agreement.md"]
    assert "Agreement over time" in text["history/history.html"] and "Flipped grades" in text["ab/rubric_compare.md"]
    assert not any(re.search(r"[\u4e00-\u9fff]", line) for line in text["1/report.html"].splitlines()
                   if line.startswith(("Per criterion", "Where judge")))


def test_the_scan_finds_english() -> None:
    # The allowlist is narrow: words of a sentence are found, symbols, ids and command names are not.
    assert english_words("模型 κw 0.75；see the judge; kefu check --repeats 2 写入 agreement.json", []) == {
        "see", "the", "judge"}
    assert english_words("ICC(A,1) 与 t3 的 accomplishment", ["t3", "accomplishment"]) == set()
