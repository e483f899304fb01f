"""The review tables of the run store (migration 004): labels, disputes, the audit trail, two writers at once."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from pipeline.store.store import Store


def label(store: Store, rater: str, score: int, criterion: str = "greeting", transcript: str = "t1") -> None:
    store.save_label(transcript_id=transcript, criterion_id=criterion, score=score, rater_id=rater,
                     rubric_id="r", rubric_version="1")


def test_a_changed_answer_replaces_the_label_and_both_stay_in_the_audit(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        label(store, "张三", 1)
        label(store, "李四", 0)
        label(store, "张三", 3)
        current = {(r.rater_id, r.score) for r in store.labels()}
        assert current == {("张三", 3), ("李四", 0)}
        assert [a.detail for a in store.audit_trail("t1") if a.actor == "张三"] == [
            '{"score": 1, "label_id": 1}', '{"score": 3, "label_id": 3}']


def test_the_audit_trail_refuses_updates_and_deletes(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        label(store, "张三", 1)
    db = sqlite3.connect(tmp_path / "kefu.sqlite")
    for statement in ("UPDATE audit SET actor = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            db.execute(statement)
    db.close()


def test_a_dispute_is_resolved_once_and_moves_the_decisions_stamp(tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        opened = store.open_dispute(transcript_id="t1", criterion_id="greeting", reason="应得满分", opened_by="张三")
        before = store.decisions_stamp()
        resolved = store.resolve_dispute(opened.id, final_score=3, resolved_by="组长", note="同意")
        assert resolved is not None and resolved.status == "resolved" and resolved.final_score == 3
        assert store.decisions_stamp() != before  # exports are rewritten on the next refresh
        assert store.resolve_dispute(opened.id, final_score=0, resolved_by="组长", note="改主意") is None
        assert store.decisions()["t1"]["greeting"].final_score == 3
        assert [a.action for a in store.audit_trail()] == ["dispute_open", "dispute_resolve"]


def test_two_reviewers_saving_at_the_same_moment_both_land(tmp_path: Path) -> None:
    Store.open(tmp_path).close()  # migrated before the race
    per_writer = 200
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def write(rater: str) -> None:
        try:
            with Store.open(tmp_path) as store:  # a connection each, as two requests have
                start.wait()
                for i in range(per_writer):
                    label(store, rater, 1, transcript=f"t{i}")
                    if i % 50 == 0:
                        opened = store.open_dispute(transcript_id=f"t{i}", criterion_id="greeting", reason="r",
                                                    opened_by=rater)
                        store.resolve_dispute(opened.id, final_score=0, resolved_by=rater, note="n")
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("张三", "李四")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with Store.open(tmp_path) as store:
        labels = store.labels()
        assert len(labels) == 2 * per_writer
        assert {r.rater_id for r in labels} == {"张三", "李四"}
        assert len(store.disputes(status="resolved")) == 2 * 4
        assert len(store.audit_trail()) == 2 * (per_writer + 2 * 4)
