"""The store: the resume-key contract, durability settings, migrations, and the export shapes."""

from __future__ import annotations

import csv
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.exports import export_run, iter_score_rows, row_values, score_columns, write_outputs
from pipeline.grader import CriterionGrade, Grade, QuotedEvidence, Sampling
from pipeline.rubric import Rubric, load_rubric
from pipeline.store import MIGRATIONS, Store, grade_key

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def rubric() -> Rubric:
    return load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")


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


def make_grade(rubric: Rubric, tid: str, repeat: int, *, missing: str | None = None, scope: str = "all") -> Grade:
    crits = rubric.criteria() if scope == "all" else [rubric.criterion(scope)]
    return Grade(
        key=f"{tid}-{repeat}-{scope}", transcript_id=tid, repeat=repeat, scope=scope,
        status="scored" if missing is None else "unscored",
        criteria=[CriterionGrade(criterion_id=c.id, score=None if c.id == missing else c.max, reasoning="理由",
                                 evidence=[QuotedEvidence(turn=1, quote="您好", verified=True)]) for c in crits],
        model="m", attempts=1, prompt_tokens=10, completion_tokens=5, created_at=datetime.now(UTC),
    )


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
    reader = {"csv": lambda p: pd.read_csv(p, encoding="utf-8-sig"),
              "xlsx": lambda p: pd.read_excel(p, sheet_name="scores"),
              "parquet": pd.read_parquet}[fmt]
    frame = reader(paths[0])
    assert list(frame.columns) == score_columns(rubric)
    assert frame.loc[0, "total"] == 76 and pd.isna(frame.loc[1, "closing"]) and pd.isna(frame.loc[1, "total"])
