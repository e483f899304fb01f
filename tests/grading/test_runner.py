"""The runner: resume, repeats, concurrency and rate limits, rejects — against a real loopback server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.checks.checker import DEFAULT_LEXICONS, ServiceChecker, TranscriptChecks
from pipeline.checks.lexicons import load_lexicons
from pipeline.checks.timing import TimingThresholds
from pipeline.grading.grader import Grader
from pipeline.grading.prompting import PromptSet, transcript_boundary
from pipeline.grading.redaction import RedactionConfig, find_pii
from pipeline.grading.runner import RunOptions, RunSummary, run_grading
from pipeline.llm.client import Endpoint, LLMClient
from pipeline.llm.pacing import Pacer
from pipeline.llm.retry import RetryPolicy
from pipeline.models.grade import Sampling
from pipeline.models.transcript import Reject, Role, Transcript, Turn
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store
from pipeline.testing.mockserver import MockServer
from pipeline.testing.script import Content

REPO = Path(__file__).resolve().parents[2]


def transcripts(n: int, *, long_text: str | None = None) -> list[Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        out.append(Transcript(id=f"c{i:03d}", shop="小店", agent_id=f"a{i % 3}", turns=[
            Turn(role=Role.customer, text=long_text or f"第{i}个问题：什么时候发货？", time=t0 + timedelta(minutes=i)),
            Turn(role=Role.agent, text="亲，您好，今天下单今天发货哦", time=t0 + timedelta(minutes=i, seconds=8)),
        ]))
    return out


async def _no_sleep(_: float) -> None:
    pass


def run(server: MockServer, rubric: Rubric, items: list[Transcript | Reject], out: Path,
        redaction: RedactionConfig | None = None, checker: ServiceChecker | None = None,
        **options: object) -> RunSummary:
    async def go() -> RunSummary:
        client = LLMClient(Endpoint(server.base_url, "k"))
        grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(),
                        retry=RetryPolicy(attempts=2), sleep=_no_sleep)
        try:
            with Store.open(out) as store:
                return await run_grading(items, grader=grader, store=store, options=RunOptions(**options),
                                         rejects_path=out / "rejects.jsonl", redaction=redaction,
                                         checker=checker)
        finally:
            await client.close()

    return asyncio.run(go())


def test_rerun_resumes_without_a_single_request(mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    items: list[Transcript | Reject] = list(transcripts(12))
    first = run(mock_server, rubric, items, tmp_path, concurrency=4)
    assert first.graded == 12 and len(mock_server.requests) == 12
    mock_server.reset()
    second = run(mock_server, rubric, items, tmp_path, concurrency=4)
    assert second.skipped == 12 and second.graded == 0
    assert mock_server.requests == []


def test_repeats_are_independent_requests(mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    summary = run(mock_server, rubric, list(transcripts(3)), tmp_path, repeats=3)
    assert summary.graded == 9 and len(mock_server.requests) == 9
    with Store.open(tmp_path) as store:
        grades = list(store.iter_grades())
    assert sorted((g.transcript_id, g.repeat) for g in grades) == [(f"c{i:03d}", r) for i in range(3) for r in range(3)]
    assert len({g.key for g in grades}) == 9


def test_unscored_are_kept_and_retried_only_on_request(mock_server: MockServer, rubric: Rubric,
                                                       tmp_path: Path) -> None:
    mock_server.script(Content(text="不是 JSON"), Content(text="还不是"))  # the reply and its re-ask
    first = run(mock_server, rubric, list(transcripts(1)), tmp_path)
    assert first.unscored == 1
    mock_server.reset()
    again = run(mock_server, rubric, list(transcripts(1)), tmp_path)
    assert again.skipped == 1 and mock_server.requests == []
    retried = run(mock_server, rubric, list(transcripts(1)), tmp_path, retry_failed=True)
    assert retried.graded == 1 and len(mock_server.requests) == 1
    with Store.open(tmp_path) as store:
        assert store.count_grades() == {"scored": 1}


def test_concurrency_never_exceeds_the_limit(rubric: Rubric, tmp_path: Path) -> None:
    with MockServer(latency=0.05) as server:
        run(server, rubric, list(transcripts(40)), tmp_path, concurrency=5)
        assert server.max_in_flight == 5  # reached, never exceeded


def test_rate_limit_keeps_requests_per_minute(rubric: Rubric, tmp_path: Path) -> None:
    with MockServer() as server:
        run(server, rubric, list(transcripts(16)), tmp_path, concurrency=8, rpm=1200)  # 20 per second
        arrivals = sorted(r.arrived_monotonic for r in server.requests)
    # Any one-second window holds at most 20 requests (+1 for the window edge, +1 for scheduling jitter).
    for i, start in enumerate(arrivals):
        in_window = sum(1 for t in arrivals[i:] if t - start < 1.0)
        assert in_window <= 22
    assert arrivals[-1] - arrivals[0] >= 15 / 20 * 0.9


def test_too_long_transcript_is_rejected_not_truncated(mock_server: MockServer, rubric: Rubric,
                                                       tmp_path: Path) -> None:
    items: list[Transcript | Reject] = [*transcripts(2), *transcripts(1, long_text="很长" * 20000)]
    items[2] = items[2].model_copy(update={"id": "long", "source": "chats.jsonl:3"})
    summary = run(mock_server, rubric, items, tmp_path, context_window=32768)
    assert summary.graded == 2 and summary.rejected == 1
    reject = Reject.model_validate_json((tmp_path / "rejects.jsonl").read_text(encoding="utf-8").strip())
    assert reject.transcript_id == "long" and reject.line == 3 and reject.file == "chats.jsonl"
    assert "context window of 32768" in reject.reason and "truncated" in reject.reason
    sent = "".join(r.body["messages"][1]["content"] for r in mock_server.requests)
    assert "很长很长" not in sent


def test_rejects_from_the_reader_are_written_and_the_rest_graded(mock_server: MockServer, rubric: Rubric,
                                                                 tmp_path: Path) -> None:
    bad = Reject(file="in.jsonl", line=2, transcript_id=None, field="turns", reason="missing field 'turns'")
    items: list[Transcript | Reject] = [transcripts(2)[0], bad, transcripts(2)[1]]
    summary = run(mock_server, rubric, items, tmp_path)
    assert (summary.graded, summary.rejected) == (2, 1)
    assert Reject.model_validate_json((tmp_path / "rejects.jsonl").read_text(encoding="utf-8")) == bad


def test_each_request_carries_its_own_transcript(mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    items = transcripts(6)
    run(mock_server, rubric, list(items), tmp_path, concurrency=3)
    seen = sorted(r.body["messages"][1]["content"].split("<<<TRANSCRIPT ", 1)[1][:12] for r in mock_server.requests)
    assert seen == sorted(transcript_boundary(t) for t in items)


# ---- checks at ingest and redaction --------------------------------------------------------------------

PHONE, EMAIL = "13812345678", "li.na@example.com"


def pii_chats(n: int) -> list[Transcript]:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return [Transcript(id=f"p{i}", turns=[
        Turn(role=Role.customer, text=f"我的电话{PHONE}，邮箱{EMAIL}，订单{i}改地址", time=t0),
        Turn(role=Role.agent, text=f"好的亲，已改为{PHONE}但是要明天发", time=t0 + timedelta(seconds=30)),
    ]) for i in range(n)]


class CountingChecker(ServiceChecker):
    """The real checker, counting what it was given."""

    def __init__(self) -> None:
        super().__init__(load_lexicons(DEFAULT_LEXICONS))
        self.seen: list[Transcript] = []

    def check(self, transcript: Transcript, transcript_hash: str | None = None) -> TranscriptChecks:
        self.seen.append(transcript)
        return super().check(transcript, transcript_hash)


def test_checks_run_once_per_transcript_on_the_original(mock_server: MockServer, rubric: Rubric,
                                                        tmp_path: Path) -> None:
    chats = pii_chats(2)
    checker = CountingChecker()
    run(mock_server, rubric, list(chats), tmp_path, repeats=3, redaction=RedactionConfig(), checker=checker)
    assert checker.seen == chats  # once each whatever the repeats, and not the redacted copy
    with Store.open(tmp_path) as store:
        meta = store.transcript_meta()
    record = meta["p0"]["checks"]
    but = next(h for h in record["phrases"]["hits"] if h["group"] == "but_words")
    assert but["start"] == chats[0].turns[1].text.index("但是")  # an offset in the original text
    assert record["columns"]["first_response_s"] == 30.0
    resumed = CountingChecker()
    run(mock_server, rubric, list(chats), tmp_path, repeats=3, redaction=RedactionConfig(), checker=resumed)
    assert resumed.seen == []  # stored checks of the same transcripts by the same checker are reused
    stricter = ServiceChecker(load_lexicons(DEFAULT_LEXICONS), TimingThresholds(first_reply_within_s=20))
    run(mock_server, rubric, list(chats), tmp_path, repeats=3, redaction=RedactionConfig(), checker=stricter)
    with Store.open(tmp_path) as store:
        assert store.transcript_checks("p0")["columns"]["first_reply_within_limit"] is False  # re-checked


def test_redaction_replaces_pii_counts_it_and_verifies_quotes_against_what_was_sent(
        mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    # Turn 2 is the agent's (the criteria judge the agent): "好的亲，已改为[手机号1]…" as sent.
    reply = {c.id: {"evidence": [{"turn": 2, "quote": "已改为[手机号1]"}], "reasoning": "r", "score": c.max}
             for c in rubric.criteria()}
    mock_server.script(Content(text=json.dumps(reply, ensure_ascii=False)))
    summary = run(mock_server, rubric, list(pii_chats(2)), tmp_path, concurrency=1, redaction=RedactionConfig())
    bodies = [json.dumps(r.body, ensure_ascii=False) for r in mock_server.requests]
    assert len(bodies) == 2 and all(find_pii(b) == [] for b in bodies)
    assert all(PHONE not in b and EMAIL not in b and "[手机号1]" in b for b in bodies)
    # Per transcript: the phone twice (customer and agent), the e-mail once; two transcripts sent.
    assert summary.redacted and summary.redactions == {"mobile": 4, "email": 2}
    with Store.open(tmp_path) as store:
        first = next(g for g in store.iter_grades() if g.transcript_id == "p0")
    assert all(e.verified for cg in first.criteria for e in cg.evidence)


def test_redaction_changes_the_resume_key(mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    chats: list[Transcript | Reject] = list(transcripts(3))  # no PII: the text sent is the same either way
    run(mock_server, rubric, chats, tmp_path)
    redacted = run(mock_server, rubric, chats, tmp_path, redaction=RedactionConfig())
    assert redacted.graded == 3 and redacted.skipped == 0 and redacted.redactions == {}
    again = run(mock_server, rubric, chats, tmp_path, redaction=RedactionConfig())
    assert again.skipped == 3 and len(mock_server.requests) == 6


def test_the_first_request_leaves_after_the_first_chat_is_read_not_after_a_queue_full(
        mock_server: MockServer, rubric: Rubric, tmp_path: Path) -> None:
    # The reader once filled the whole queue (2 × concurrency chats read, checked and rendered) before any
    # worker ran: 0.3 s of a CLI run before its first request. Counted here by the chats read at each send.
    pulled = 0
    read_at_send: list[int] = []

    def counted() -> Iterator[Transcript | Reject]:
        nonlocal pulled
        for transcript in transcripts(40):
            pulled += 1
            yield transcript

    class CountingPacer(Pacer):
        async def acquire(self, body_bytes: int = 0) -> float:
            read_at_send.append(pulled)
            return await super().acquire(body_bytes)

    async def go() -> RunSummary:
        client = LLMClient(Endpoint(mock_server.base_url, "k"), pacer=CountingPacer(8))
        grader = Grader(rubric, PromptSet("zh"), client, model="mock-model", sampling=Sampling(),
                        retry=RetryPolicy(attempts=2), sleep=_no_sleep)
        try:
            with Store.open(tmp_path) as store:
                return await run_grading(counted(), grader=grader, store=store, options=RunOptions(concurrency=8),
                                         rejects_path=tmp_path / "rejects.jsonl")
        finally:
            await client.close()

    assert asyncio.run(go()).graded == 40
    assert read_at_send[0] == 1
    assert read_at_send[:8] == list(range(1, 9))  # each chat's request leaves before the next chat is read
