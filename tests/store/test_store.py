"""The store: the resume-key contract, durability settings, migrations, and the export shapes."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.checks.checker import ServiceChecker
from pipeline.models.checks import CHECKS
from pipeline.models.grade import CriterionGrade, Grade, QuotedEvidence, Sampling
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.outputs.exports import export_run, iter_score_rows, row_values, score_columns, write_checks, write_outputs
from pipeline.outputs.headings import score_headings
from pipeline.rubric.model import Rubric
from pipeline.store.migrations import MIGRATIONS
from pipeline.store.rows import grade_key
from pipeline.store.store import Store

REPO = Path(__file__).resolve().parents[2]


BASE = dict(transcript_hash="t", rubric_hash="r", template_hash="p", model="m", sampling=Sampling(), repeat=0,
            scope="all")


@pytest.mark.parametrize(
    "change",
    [{"transcript_hash": "t2"}, {"rubric_hash": "r2"}, {"template_hash": "p2"}, {"model": "m2"},
     {"sampling": Sampling(temperature=0.7)}, {"sampling": Sampling(seed=1)}, {"sampling": Sampling(max_tokens=9)},
     {"repeat": 1}, {"scope": "greeting"}, {"options": {"redact": True}}],
)
def test_every_key_input_changes_the_key(change: dict[str, object]) -> None:
    assert grade_key(**{**BASE, **change}) != grade_key(**BASE)  # type: ignore[arg-type]


def test_key_is_stable() -> None:
    # Pinned: changing the key's recipe silently re-grades every store, so it must be deliberate.
    assert grade_key(**BASE) == grade_key(**dict(BASE))  # type: ignore[arg-type]
    assert len(grade_key(**BASE)) == 64  # type: ignore[arg-type]


def test_store_is_wal_and_migrations_apply_once(tmp_path: Path) -> None:
    Store.open(tmp_path).close()
    Store.open(tmp_path).close()
    db = sqlite3.connect(tmp_path / "kefu.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert [r[0] for r in db.execute("SELECT name FROM migrations")] == [name for name, _ in MIGRATIONS]


def test_a_folder_with_pending_batches_keeps_them_through_migration_004(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "kefu.sqlite", isolation_level=None)
    db.execute("CREATE TABLE migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for name, migrate in MIGRATIONS[:3]:  # a run folder from before 004
        migrate(db)
        db.execute("INSERT INTO migrations VALUES (?, '2026-01-01')", (name,))
    db.execute("INSERT INTO batches (local_file, run_id, rubric_hash, model, response_mode, requests, bytes, status,"
               " created_at, updated_at) VALUES ('f', 1, 'r', 'm', 'json_schema', 1, 1, 'written', 't', 't')")
    db.execute("INSERT INTO batch_requests VALUES ('k1', 'f', 'c1', 'h', 0, 'all', NULL)")
    db.close()
    with Store.open(tmp_path) as store:
        assert "k1" in store.finished_keys(pending_batches=True)
        assert "k1" in (store.pending_batch_keys() or ()) and store.batch_writes("k1") == 1


def make_grade(rubric: Rubric, tid: str, repeat: int, *, missing: str | None = None, scope: str = "all") -> Grade:
    crits = rubric.criteria() if scope == "all" else [rubric.criterion(scope)]
    return Grade(
        key=f"{tid}-{repeat}-{scope}", transcript_id=tid, repeat=repeat, scope=scope,
        status="scored" if missing is None else "unscored",
        criteria=[CriterionGrade(criterion_id=c.id, score=None if c.id == missing else c.max, reasoning="理由",
                                 evidence=[QuotedEvidence(turn=1, quote="您好", verified=True)]) for c in crits],
        model="m", attempts=1, prompt_tokens=10, completion_tokens=5, created_at=datetime.now(UTC),
    )


def test_a_store_from_before_injection_hits_opens_and_reads_none(rubric: Rubric, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        store.save_grade(make_grade(rubric, "a", 0), 1, rubric.content_hash)
    db = sqlite3.connect(tmp_path / "kefu.sqlite")  # as migration 003 left it: no injection column
    db.execute("ALTER TABLE grades DROP COLUMN injection")
    db.execute("DELETE FROM migrations WHERE name = '005_injection'")
    db.commit()
    db.close()
    with Store.open(tmp_path) as store:
        [read] = store.iter_grades()
        assert read.injection == [] and read.transcript_id == "a"
        assert [row.injection for row in store.iter_grade_rows(rubric_hash=rubric.content_hash)] == [None]


def test_scores_csv_contract_and_unscored_are_empty(rubric: Rubric, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        store.save_grade(make_grade(rubric, "a", 0), run, rubric.content_hash)
        store.save_grade(make_grade(rubric, "b", 0, missing="greeting"), run, rubric.content_hash)
        scores, grades = write_outputs(store, rubric, tmp_path)
    rows = list(csv.DictReader(scores.open(encoding="utf-8-sig")))
    assert list(rows[0]) == score_columns(rubric)
    assert rows[0]["total"] == "76" and rows[0]["max_total"] == "76" and rows[0]["status"] == "scored"
    assert rows[1]["greeting"] == "" and rows[1]["service_language"] == "" and rows[1]["total"] == ""
    assert rows[1]["text_accuracy"] == "3"  # the others keep their points
    lines = [json.loads(line) for line in grades.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == 2 * len(rubric.criteria())
    assert {"score", "evidence", "quotes_verified", "reasoning", "call", "status"} <= set(lines[0])


def test_per_criterion_calls_fold_into_one_row(rubric: Rubric, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        for c in rubric.criteria():
            store.save_grade(make_grade(rubric, "a", 0, scope=c.id), run, rubric.content_hash)
        [row] = list(iter_score_rows(store, rubric))
    assert row.status == "scored" and row_values(row, rubric)["total"] == rubric.total


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "parquet"])
def test_export_formats_round_trip(rubric: Rubric, tmp_path: Path, fmt: str) -> None:
    import pandas as pd

    with Store.open(tmp_path) as store:
        run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        store.save_grade(make_grade(rubric, "a", 0), run, rubric.content_hash)
        store.save_grade(make_grade(rubric, "b", 0, missing="closing"), run, rubric.content_hash)
        paths = export_run(store, rubric, fmt, tmp_path / "x")  # type: ignore[arg-type]
    if fmt == "xlsx":  # for people: Chinese headings below the judge's note (tests/outputs/test_spreadsheet.py)
        frame = pd.read_excel(paths[0], sheet_name="评分", header=1)
        headings = score_headings(rubric)
        frame = frame.rename(columns={h: cid for cid, h in headings.items()})
    else:
        frame = {"csv": lambda p: pd.read_csv(p, encoding="utf-8-sig"), "parquet": pd.read_parquet}[fmt](paths[0])
        assert list(frame.columns) == score_columns(rubric)
    assert frame.loc[0, "total"] == 76 and pd.isna(frame.loc[1, "closing"]) and pd.isna(frame.loc[1, "total"])


# ---- service checks and rubric hooks in the exports ----------------------------------------------------


def _chat(tid: str, reply_after_s: int | None, reply: str = "亲，您好，马上为您查询") -> Transcript:
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    timed = reply_after_s is not None
    return Transcript(id=tid, agent_id="a1", turns=[
        Turn(role=Role.customer, text="在吗，什么时候发货", time=t0 if timed else None),
        Turn(role=Role.agent, text=reply, time=t0 + timedelta(seconds=reply_after_s or 0) if timed else None),
    ])


def _store_chat(store: Store, rubric: Rubric, run: int, chat: Transcript, **scores: int) -> None:
    store.save_transcript_meta(transcript_id=chat.id, content_hash="h", platform="douyin", shop=None,
                               agent_id=chat.agent_id, started_at=None, n_turns=len(chat.turns), source=None,
                               checks=ServiceChecker.load().check(chat).record())
    grade = make_grade(rubric, chat.id, 0)
    for cg in grade.criteria:
        cg.score = scores.get(cg.criterion_id, cg.score)
    store.save_grade(grade, run, rubric.content_hash)


def test_checks_and_hooks_in_scores_grades_and_checks_files(rubric: Rubric, tmp_path: Path) -> None:
    with Store.open(tmp_path) as store:
        run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        _store_chat(store, rubric, run, _chat("fast", 20))
        _store_chat(store, rubric, run, _chat("slow", 700))  # > 600 s: the seed rubric caps proactivity at 0
        _store_chat(store, rubric, run, _chat("rude", 20), courtesy_patience=0)  # 致命项
        _store_chat(store, rubric, run, _chat("untimed", None))
        scores, grades = write_outputs(store, rubric, tmp_path)
        checks = write_checks(store, tmp_path)
    rows = {r["transcript_id"]: r for r in csv.DictReader(scores.open(encoding="utf-8-sig"))}
    assert list(rows["fast"]) == score_columns(rubric)
    assert list(rows["fast"])[-len(CHECKS):] == list(CHECKS)  # check columns come after the score columns
    fast, slow, rude, untimed = rows["fast"], rows["slow"], rows["rude"], rows["untimed"]
    assert (fast["total"], fast["llm_total"], fast["critical_failed"], fast["adjustments"]) == ("76", "76", "False", "")
    assert (fast["first_response_s"], fast["first_reply_within_limit"], fast["banned_hits"]) == ("20.0", "True", "0")
    # Capped: the criterion, its group, dimension and total hold the final score; llm_total the LLM's.
    assert (slow["proactivity"], slow["service_attitude"], slow["affinity"], slow["total"]) == ("0", "8", "17", "72")
    assert slow["llm_total"] == "76" and slow["adjustments"] == "主动性 封顶 4→0：10分钟内无人工回复"
    assert slow["adjustment_ids"] == "cap:proactivity" and fast["adjustment_ids"] == ""
    assert slow["max_wait_s"] == "700.0"
    # Critical: the chat's total is 0; its criteria keep their points.
    assert (rude["total"], rude["critical_failed"], rude["courtesy_patience"], rude["llm_total"]) == (
        "0", "True", "0", "72")
    assert rude["adjustments"] == "致命项：亲切、耐心态度 得 0 分：态度粗鲁/与顾客争执"
    assert rude["adjustment_ids"] == "critical:courtesy_patience"
    # Not measurable: the reason and empty cells, never 0; the phrase checks still count.
    assert untimed["timing_not_measurable"] == "no customer or agent turn has a timestamp"
    assert untimed["first_reply_status"] == "not_measurable"
    assert all(untimed[c] == "" for c in ("first_response_s", "max_wait_s", "customer_messages",
                                          "share_within_rate_limit", "first_reply_within_limit"))
    assert untimed["banned_hits"] == "0" and untimed["total"] == "76"

    lines = [json.loads(line) for line in grades.read_text(encoding="utf-8").splitlines()]
    slow_pro = next(x for x in lines if x["transcript_id"] == "slow" and x["criterion_id"] == "proactivity")
    assert (slow_pro["llm_score"], slow_pro["score"]) == (4, 0)
    assert slow_pro["adjustment"] == "主动性 封顶 4→0：10分钟内无人工回复"
    assert all(x["critical_failed"] == (x["transcript_id"] == "rude") for x in lines)
    assert all(x["adjustment"] is None for x in lines if x["transcript_id"] == "fast")

    check_lines = [json.loads(line) for line in checks.read_text(encoding="utf-8").splitlines()]
    assert [c["transcript_id"] for c in check_lines] == ["fast", "rude", "slow", "untimed"]
    assert check_lines[2]["platform"] == "douyin"
    assert check_lines[2]["checks"]["timing"]["message_waits"] == [{"turn": 1, "reply_turn": 2, "wait_s": 700.0}]
    assert check_lines[3]["checks"]["columns"]["timing_not_measurable"]


def test_a_hook_change_needs_no_regrade(rubric: Rubric, tmp_path: Path) -> None:
    relaxed = rubric.model_copy(update={"caps": []})
    assert relaxed.content_hash == rubric.content_hash  # same grades are found under the changed rubric
    with Store.open(tmp_path) as store:
        run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                              template_hash="p", model="m", settings={})
        _store_chat(store, rubric, run, _chat("slow", 700))
        [strict_row] = [row_values(r, rubric) for r in iter_score_rows(store, rubric)]
        [relaxed_row] = [row_values(r, relaxed) for r in iter_score_rows(store, relaxed)]
    assert (strict_row["total"], relaxed_row["total"]) == (72, 76)
