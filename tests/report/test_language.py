"""Every report kind reads in Chinese by default: no English word outside the allowlist (statistical symbols,
ids, file and command names), and English with `lang="en"`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from pipeline.consistency.assess import assess
from pipeline.consistency.job import CheckRun
from pipeline.consistency.results import CheckOptions, CheckResult
from pipeline.consistency.wordings import compare_rubrics
from pipeline.inputs.labels import Label, LabelSet
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.report.history import write_history
from pipeline.report.messages import Lang
from pipeline.report.render import write_report, write_rubric_comparison
from pipeline.rubric.load import load_rubric, parse_rubric
from pipeline.rubric.model import Rubric

REPO = Path(__file__).resolve().parents[2]
DCH1 = REPO / "rubric" / "dch1_quality.yaml"
OPTIONS = CheckOptions(n_resamples=50)
UNITS = [f"t{i}" for i in range(8)]
HUMAN = [1, 2, 2, 3, 1, 2, 3, 2]
HOSTILE = "<script>alert(1)</script>"

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


def _labels(rubric: Rubric, raters: int, skip: str | None = None) -> LabelSet:
    return LabelSet(labels=[Label(transcript_id=u, criterion_id=c.id, score=min(h + r % 2, 4), rater_id=f"qa{r}")
                            for r in range(raters) for c in rubric.criteria() if c.id != skip
                            for u, h in zip(UNITS, HUMAN, strict=True)])


def _run(rubric: Rubric, judge: list[int], folder: Path, raters: int = 3, skip: str | None = None,
         model: str = "m", repeats: int = 2) -> CheckRun:
    scores = {u: {r: {c.id: j for c in rubric.criteria()} for r in range(repeats)}
              for u, j in zip(UNITS, judge, strict=True)}
    result, per_unit = assess(rubric, _labels(rubric, raters, skip), scores, options=OPTIONS, repeats=repeats,
                              model=model, rubric_path=str(folder / rubric.id), needs_review=["t7"])
    return CheckRun(result=result, scores=per_unit, out_dir=folder)


def _chats() -> dict[str, Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return {u: Transcript(id=u, turns=[Turn(role=Role.customer, text=f"订单到哪了？{HOSTILE}", time=t0),
                                       Turn(role=Role.agent, text="亲，已经发货了。", time=t0 + timedelta(seconds=9))])
            for u in UNITS}


def _data(*results: CheckResult) -> list[str]:
    """Every id, path and name a report quotes from its data."""
    out = [HOSTILE, *UNITS, "m0"]
    for r in results:
        out += [r.rubric_id, r.rubric_path, r.rubric_name, r.model, *r.raters]
        out += [c.criterion_id for c in r.criteria] + [c.name for c in r.criteria]
        out += [s.sum_id for s in r.sums] + [s.name for s in r.sums]
    return out


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[Lang, tuple[list[Path], list[str]]]:
    dch1 = load_rubric(DCH1)
    data = dch1.model_dump(mode="json")
    data["version"] = "2"
    data["dimensions"][0]["groups"][0]["criteria"][0]["description"] = "换一种说法：客户的问题解决了多少。"
    reworded = parse_rubric(data, "reworded.yaml")
    out: dict[Lang, tuple[list[Path], list[str]]] = {}
    for lang in ("zh", "en"):
        root = tmp_path_factory.mktemp(lang)
        # January: one rater, one repeat, a criterion nobody labelled, another judge model; February: three raters.
        before = _run(dch1, [1, 2, 1, 3, 0, 2, 2, 2], root / "jan", raters=1, skip="efficiency", model="m0",
                      repeats=1)
        now = _run(dch1, [1, 2, 2, 3, 2, 2, 3, 0], root / "feb")
        paths: list[Path] = []
        files = write_report(before.result, before.out_dir, lang=lang, chats=_chats())
        paths += [files.agreement_md, files.report_html]
        for minimum in (30, 1):  # too few for a verdict, and one with verdicts and their sentences
            files = write_report(now.result, now.out_dir / str(minimum), previous=before.result, lang=lang,
                                 chats=_chats(), min_labelled=minimum)
            paths += [files.agreement_md, files.report_html]
        paths += write_history([before.out_dir, now.out_dir / "1"], root / "history", lang=lang)
        b = _run(reworded, [1, 3, 2, 3, 0, 2, 3, 1], root / "b")
        comparison = compare_rubrics(now, b, OPTIONS, rubrics=(dch1, reworded))
        paths += write_rubric_comparison(comparison, root / "ab", chats=_chats(), lang=lang)[1:]
        out[lang] = (paths, [*_data(before.result, now.result, b.result), str(root)])
    return out


def test_every_report_kind_is_chinese_by_default(reports: dict[Lang, tuple[list[Path], list[str]]]) -> None:
    paths, data = reports["zh"]
    assert {p.name for p in paths} == {"agreement.md", "report.html", "history.md", "history.html",
                                       "rubric_compare.md", "rubric_compare.html"}
    found = {p.parent.name + "/" + p.name: words for p in paths if (words := english_words(visible_text(p), data))}
    assert found == {}


def test_english_on_request(reports: dict[Lang, tuple[list[Path], list[str]]]) -> None:
    paths, _ = reports["en"]
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
