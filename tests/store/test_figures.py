"""The store's flat figures (migration 007): filled by trigger on every write, and once for a store made before."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.checks.checker import ServiceChecker
from pipeline.models.grade import CriterionGrade, Grade, QuotedEvidence
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.store.migrations import MIGRATIONS
from pipeline.store.store import Store

T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
CHAT = Transcript(id="c1", agent_id="kf-1", shop="店", turns=[
    Turn(role=Role.customer, text="在吗", time=T0), Turn(role=Role.agent, text="嗯", time=T0.replace(minute=5))])


def grade(status: str = "scored", score: int | None = 2) -> Grade:
    evidence = [QuotedEvidence(turn=2, quote="嗯", verified=True),
                QuotedEvidence(turn=9, quote="没有", verified=False, verify_failed="not_in_turn")]
    return Grade(key="k1", transcript_id="c1", repeat=0, scope="all", status=status, model="m", attempts=1,
                 created_at=T0, criteria=[CriterionGrade(criterion_id="a", score=score, evidence=evidence),
                                          CriterionGrade(criterion_id="b", score=None)])


def lines(data: bytes) -> list[dict[str, object]]:
    return [json.loads(line) for line in data.decode().splitlines()]


def fill(store: Store) -> None:
    run = store.start_run(rubric_id="r", rubric_version="1", rubric_hash="h", template_hash="p", model="m",
                          settings={})
    store.save_grade(grade(), run, "h", meta=(CHAT, "hash", ServiceChecker.load().check(CHAT).record()))


def test_each_write_fills_the_figures_and_a_rewrite_refreshes_them(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        fill(store)
        [line] = lines(store.grade_figures(rubric_hash="h"))
        assert line == {"transcript_id": "c1", "repeat": 0, "unverified": 1,
                        "needs_review": False, "scores": {"a": 2, "b": None}}
        [chat] = lines(store.transcript_figures())
        record = ServiceChecker.load().check(CHAT).record()
        people = ("phrase_hits", "greeting_text")  # texts for people: not figures
        assert chat == {"transcript_id": "c1", "platform": None, "shop": "店", "stored_agent": "kf-1",
                        "has_checks": True, **{k: v for k, v in record["columns"].items() if k not in people},
                        "agent": "kf-1", "day": "2026-03-02", "messages_within_rate_limit": 0, "agent_turns": 1,
                        "banned": 1, "negation_refusal": 0}
        assert record["phrases"]["counts"]["banned"] == 1  # the bare 嗯
        # A transcript saved again without checks has no figures; a scored grade replaces an unscored one.
        store.save_transcript_meta(transcript_id="c1", content_hash="h2", platform=None, shop=None, agent_id=None,
                                   started_at=None, n_turns=2, source=None, checks=None)
        assert lines(store.transcript_figures())[0]["has_checks"] is False
    with Store.open(tmp_path / "second") as store:
        run = store.start_run(rubric_id="r", rubric_version="1", rubric_hash="h", template_hash="p", model="m",
                              settings={})
        store.save_grade(grade("unscored", None), run, "h")
        store.save_grade(grade("scored", 3), run, "h")
        assert lines(store.grade_figures(rubric_hash="h"))[0]["scores"] == {"a": 3, "b": None}


def test_a_store_made_before_migration_007_gets_the_same_figures_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as before:  # a run folder written before 007 existed
        before.setattr("pipeline.store.database.MIGRATIONS", MIGRATIONS[:6])
        with Store.open(tmp_path / "old") as store:
            fill(store)
        db = sqlite3.connect(tmp_path / "old" / "kefu.sqlite")
        assert "figures" not in {row[1] for row in db.execute("PRAGMA table_info(transcripts)")}
        db.close()
    with Store.open(tmp_path / "new") as store:
        fill(store)
        expected = (store.grade_figures(rubric_hash="h"), store.transcript_figures())
    with Store.open(tmp_path / "old") as store:
        assert (store.grade_figures(rubric_hash="h"), store.transcript_figures()) == expected
        assert lines(expected[0])[0]["scores"] and lines(expected[1])[0]["has_checks"]
