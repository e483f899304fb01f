"""The store's flat figures (migrations 007 and 008): filled by trigger on every write, and once for a store
made before (or by a version with other check columns).

Transcripts' lines are read here with Python's own `csv` module, an independent reader of the format."""

from __future__ import annotations

import csv
import io
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
from pipeline.store.transcript_figures import FIGURE_COLUMNS

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


def chats(data: bytes) -> list[dict[str, object]]:
    """The transcripts' CSV lines as dicts, each value as JSON would give it (texts quoted, so '' is None)."""
    names = ["transcript_id", "platform", "shop", "stored_agent", "has_checks", *(c.name for c in FIGURE_COLUMNS)]
    texts = {"transcript_id", "platform", "shop", "stored_agent"} | {
        c.name for c in FIGURE_COLUMNS if c.kind in ("reason", "choice")}
    return [{name: (value or None) if name in texts else json.loads(value) if value else None
             for name, value in zip(names, row, strict=True)}
            for row in csv.reader(io.StringIO(data.decode()))]


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
        [chat] = chats(store.transcript_figures())
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
        assert chats(store.transcript_figures())[0]["has_checks"] is False
    with Store.open(tmp_path / "second") as store:
        run = store.start_run(rubric_id="r", rubric_version="1", rubric_hash="h", template_hash="p", model="m",
                              settings={})
        store.save_grade(grade("unscored", None), run, "h")
        store.save_grade(grade("scored", 3), run, "h")
        assert lines(store.grade_figures(rubric_hash="h"))[0]["scores"] == {"a": 3, "b": None}


@pytest.mark.parametrize("applied", [6, 7], ids=["before-007", "before-008"])
def test_a_store_made_before_the_figures_gets_the_same_figures_once(tmp_path: Path, applied: int,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as before:  # a run folder written by a version with the first `applied` migrations
        before.setattr("pipeline.store.database.MIGRATIONS", MIGRATIONS[:applied])
        before.setattr("pipeline.store.transcript_figures.is_current", lambda db: True)
        with Store.open(tmp_path / "old") as store:
            fill(store)
        db = sqlite3.connect(tmp_path / "old" / "kefu.sqlite")
        assert ("figures" in {row[1] for row in db.execute("PRAGMA table_info(transcripts)")}) == (applied == 7)
        assert not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'transcript_figures'").fetchall()
        db.close()
    with Store.open(tmp_path / "new") as store:
        fill(store)
        expected = (store.grade_figures(rubric_hash="h"), store.transcript_figures())
    with Store.open(tmp_path / "old") as store:
        assert (store.grade_figures(rubric_hash="h"), store.transcript_figures()) == expected
        assert lines(expected[0])[0]["scores"] and chats(expected[1])[0]["has_checks"]
    db = sqlite3.connect(tmp_path / "old" / "kefu.sqlite")
    assert "figures" not in {row[1] for row in db.execute("PRAGMA table_info(transcripts)")}
    db.close()


def test_lines_made_by_other_check_columns_are_remade_on_open_and_kept_after(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        fill(store)
        expected = store.transcript_figures()
    db = sqlite3.connect(tmp_path / "kefu.sqlite")  # as a version whose checks had other columns left it
    db.execute("UPDATE meta SET value = 'another version' WHERE name = 'transcript_figures_layout'")
    db.execute("DROP TRIGGER transcript_figures_insert")
    db.execute("UPDATE transcript_figures SET line = 'c1,stale'")
    db.commit()
    db.close()
    with Store.open(tmp_path) as store:
        assert store.transcript_figures() == expected
        store.save_transcript(CHAT.model_copy(update={"id": "c2"}), "hash2", ServiceChecker.load().check(CHAT).record())
        assert [chat["transcript_id"] for chat in chats(store.transcript_figures())] == ["c1", "c2"]
