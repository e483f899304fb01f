"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import pytest
import uvicorn
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from pipeline.consistency.assess import assess
from pipeline.consistency.job import CheckRun
from pipeline.consistency.results import CheckOptions, CheckResult
from pipeline.consistency.wordings import compare_rubrics
from pipeline.grading.grader import Grader
from pipeline.grading.prompting import PromptSet
from pipeline.grading.runner import RunOptions, RunSummary, run_grading
from pipeline.inputs.labels import Label, LabelSet
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.pacing import Pacer
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.report.history import write_history
from pipeline.report.messages import Lang
from pipeline.report.render import write_report, write_rubric_comparison
from pipeline.review import create_app
from pipeline.rubric.load import load_rubric, parse_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless chromium under Playwright; skips without it, fails in CI (`.ci/run` installs it)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} not found: apt-get install chromium fonts-noto-cjk (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def rubric() -> Rubric:
    """The seed rubric, rubric/ecommerce_cs.yaml (76 points, 13 criteria); a module on another one overrides it."""
    return load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 with default settings; change its attributes freely."""
    with MockServer() as server:
        yield server


PII_VALUES = {
    "mobile": "13812345678",
    "email": "zs@example.org",
    "id_card": "11010519491231002X",
    "bank_card": "6222021234567890128",
    "landline": "0571-88888888",
    "address": "浙江省杭州市西湖区文三路90号东部软件园3号楼501室",
}
"""One value of each kind `pipeline.grading.redaction` finds, as `pii_everywhere` spreads them."""


@pytest.fixture
def pii_values() -> dict[str, str]:
    """The values `pii_everywhere` holds, by kind: none may reach an endpoint when redaction is on."""
    return dict(PII_VALUES)


@pytest.fixture
def pii_everywhere() -> Transcript:
    """A chat with personal data in every text field: id, platform, shop, agent id, each turn's text and speaker."""
    v = PII_VALUES
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return Transcript(
        id=f"pii-{v['mobile']}", platform=f"抖音 {v['landline']}", shop=f"张三的店 {v['mobile']} {v['email']}",
        agent_id=f"kf-{v['email']}",
        turns=[
            Turn(role=Role.customer, speaker=f"买家{v['mobile']}", time=t0,
                 text=f"寄到{v['address']}，身份证{v['id_card']}"),
            Turn(role=Role.agent, speaker=f"客服 {v['landline']}", time=t0 + timedelta(seconds=30),
                 text=f"亲，您好，退款到卡{v['bank_card']}，邮件发{v['email']}"),
        ],
    )


# Hypothesis budgets: "ci" (the default) keeps the property tests to seconds; "bench" is the long fuzz run,
# HYPOTHESIS_PROFILE=bench pytest -q tests/inputs/test_transcripts_properties.py (README, Development).
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("bench", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

LINE_BREAK_TEXT = st.lists(st.sampled_from("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")
                           | st.text(st.characters(exclude_categories=["Cs"]), max_size=3)).map("".join)
"""Valid Unicode text full of every line boundary str.splitlines knows (drawn as pieces: as the alphabet of
`st.text` they almost never come up)."""


HOSTILE = "<script>alert('x')</script>"


def review_chats() -> list[Transcript]:
    """Chats for the review workbench: two agents and shops, a banned phrase, a long wait (r06), hostile text."""
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    plain = [
        Transcript(id=f"r{i:02d}", agent_id=f"kf-{i % 2 + 1}", shop=f"店铺{'AB'[i % 2]}", platform="taobao", turns=[
            Turn(role=Role.customer, text=f"在吗，订单{i}什么时候发货？", time=t0 + timedelta(minutes=i)),
            # Phrases the mock judge quotes (order 1234, 已为您核实, ...): some of its quotes land on this turn.
            Turn(role=Role.agent, text="亲，您好，已为您核实 order 1234：物流延迟，退款已处理，好的",
                 time=t0 + timedelta(minutes=i, seconds=5)),
            Turn(role=Role.customer, text="好的谢谢", time=t0 + timedelta(minutes=i, seconds=30)),
            Turn(role=Role.agent, text="嗯", time=t0 + timedelta(minutes=i + (12 if i == 6 else 0), seconds=40)),
        ])
        for i in range(8)
    ]
    hostile = Transcript(id=f"x{HOSTILE}", agent_id=f"kf{HOSTILE}", shop="店铺A", platform="douyin", turns=[
        Turn(role=Role.customer, text=f"{HOSTILE} 我要退款", time=t0),
        Turn(role=Role.agent, text=f"亲，{HOSTILE}已为您处理", time=t0 + timedelta(seconds=20)),
    ])
    return [*plain, hostile]


def grade_run(folder: Path, chats: list[Transcript], *extra: str) -> Path:
    """Grade `chats` with `kefu grade` (a subprocess) against a fresh loopback mock server; returns the run folder."""
    folder.mkdir(parents=True, exist_ok=True)
    src = folder / "chats.jsonl"
    src.write_text("".join(c.model_dump_json(exclude_none=True) + "\n" for c in chats), encoding="utf-8")
    out = folder / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_"))}
    with MockServer() as server:
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test-secret-123456"}
        done = subprocess.run([sys.executable, "-m", "pipeline", "grade", str(src), "--out", str(out), *extra],
                              env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def reviewed_run_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`review_chats()` graded twice each (repeats), once per session; copy it before changing it."""
    return grade_run(tmp_path_factory.mktemp("review"), review_chats(), "--repeats", "2")


@pytest.fixture
def reviewed_run(reviewed_run_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the graded review run (its input file stays where it was graded)."""
    return Path(shutil.copytree(reviewed_run_template, tmp_path / "out"))


@pytest.fixture
def live_server(reviewed_run: Path) -> Iterator[str]:
    """The app under uvicorn on a free 127.0.0.1 port, in a thread."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app([reviewed_run]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(autouse=True)
def learned_limits_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rate limits learned by a test run (pipeline.llm.learned_limits) go to a file of the test's own, never the
    user's cache (the CLI helpers pass KEFU_LIMITS_FILE on to the commands they start)."""
    path = tmp_path_factory.mktemp("limits") / "rate_limits.json"
    monkeypatch.setenv("KEFU_LIMITS_FILE", str(path))
    return path


GradeChats = Callable[..., Awaitable[RunSummary]]
"""`grade_chats(base_url, pacer, out, transcripts, concurrency=16, retry=None)`: see the fixture."""


@pytest.fixture
def grade_chats() -> GradeChats:
    """Grade transcripts with the e-commerce rubric against a loopback server through `run_grading`, with the
    `Pacer` given (None: unpaced) and `concurrency` workers; the summary."""
    rubric = load_rubric(Path(__file__).resolve().parent.parent / "rubric" / "ecommerce_cs.yaml")

    async def grade(base_url: str, pacer: Pacer | None, out: Path, transcripts: list[Transcript], *,
                    concurrency: int = 16, retry: RetryPolicy | None = None) -> RunSummary:
        client = LLMClient(Endpoint(base_url, "k"), pacer=pacer)
        grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(),
                        retry=retry or RetryPolicy())
        try:
            with Store.open(out) as store:
                return await run_grading(transcripts, grader=grader, store=store,
                                         options=RunOptions(concurrency=concurrency), rejects_path=out / "r.jsonl")
        finally:
            await client.close()

    return grade


# --- report pages of every kind (tests/report) ------------------------------------------------------

REPORT_OPTIONS = CheckOptions(n_resamples=50)
REPORT_UNITS = [f"t{i}" for i in range(8)]
REPORT_HUMAN = [1, 2, 2, 3, 1, 2, 3, 2]


class ReportPages(NamedTuple):
    """The pages written in one language, and the data strings (ids, paths, names) they quote."""

    paths: list[Path]
    data: list[str]


def _labels(rubric: Rubric, raters: int, skip: str | None = None) -> LabelSet:
    return LabelSet(labels=[Label(transcript_id=u, criterion_id=c.id, score=min(h + r % 2, 4), rater_id=f"qa{r}")
                            for r in range(raters) for c in rubric.criteria() if c.id != skip
                            for u, h in zip(REPORT_UNITS, REPORT_HUMAN, strict=True)])


def _run(rubric: Rubric, judge: list[int], folder: Path, raters: int = 3, skip: str | None = None,
         model: str = "m", repeats: int = 2) -> CheckRun:
    scores = {u: {r: {c.id: j for c in rubric.criteria()} for r in range(repeats)}
              for u, j in zip(REPORT_UNITS, judge, strict=True)}
    result, per_unit = assess(rubric, _labels(rubric, raters, skip), scores, options=REPORT_OPTIONS, repeats=repeats,
                              model=model, rubric_path=str(folder / rubric.id), needs_review=["t7"])
    return CheckRun(result=result, scores=per_unit, out_dir=folder)


def _chats() -> dict[str, Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return {u: Transcript(id=u, turns=[Turn(role=Role.customer, text=f"订单到哪了？{HOSTILE}", time=t0),
                                       Turn(role=Role.agent, text="亲，已经发货了。", time=t0 + timedelta(seconds=9))])
            for u in REPORT_UNITS}


def _data(*results: CheckResult) -> list[str]:
    """Every id, path and name a report quotes from its data."""
    out = [HOSTILE, *REPORT_UNITS, "m0"]
    for r in results:
        out += [r.rubric_id, r.rubric_path, r.rubric_name, r.model, *r.raters]
        out += [c.criterion_id for c in r.criteria] + [c.name for c in r.criteria]
        out += [s.sum_id for s in r.sums] + [s.name for s in r.sums]
    return out


@pytest.fixture(scope="session")
def report_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[Lang, ReportPages]:
    """Per language: a January check (one rater, one repeat, a criterion nobody labelled), a February one
    (three raters) reported twice against January (too few for a verdict, and with verdicts), the history
    of the two, and a comparison of two wordings; chats hold hostile text."""
    dch1 = load_rubric(REPO / "rubric" / "dch1_quality.yaml")
    data = dch1.model_dump(mode="json")
    data["version"] = "2"
    data["dimensions"][0]["groups"][0]["criteria"][0]["description"] = "换一种说法：客户的问题解决了多少。"
    reworded = parse_rubric(data, "reworded.yaml")
    out: dict[Lang, ReportPages] = {}
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
        comparison = compare_rubrics(now, b, REPORT_OPTIONS, rubrics=(dch1, reworded))
        paths += write_rubric_comparison(comparison, root / "ab", chats=_chats(), lang=lang)[1:]
        out[lang] = ReportPages(paths, [*_data(before.result, now.result, b.result), str(root)])
    return out
