"""The fast export path writes exactly the bytes of the model-based reference construction.

`refresh_outputs` and `export_run` read stored grades as raw rows (no pydantic Grade) and splice
stored JSON; the reference below builds every line from validated `Grade` models with
`iter_score_rows`/`row_values` and `json.dumps`, as the exports did before. The store is built to
cover what a byte could differ on: scored, partial and unscored rows, repeats, per-criterion
scopes, an unknown criterion, evidence with Chinese, quotes, escapes and failed verification,
transcripts with and without checks or metadata, prompt-injection hits (in one repeat's call only, and
twice over), and a rubric whose caps and critical items fire.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from pipeline.checks.checker import ServiceChecker
from pipeline.jsonlines import escape_separators
from pipeline.models.grade import CriterionGrade, Grade, InjectionHit, QuotedEvidence
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.outputs.exports import export_run, iter_score_rows, refresh_outputs, row_values, score_columns
from pipeline.rubric.hooks import AdjustedScores
from pipeline.rubric.load import load_rubric, parse_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

REPO = Path(__file__).resolve().parents[2]
BEIJING = timezone(timedelta(hours=8))
T0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)


def hooked_rubric() -> Rubric:
    """The seed rubric plus hooks that stack: two caps on one chat's criteria and a critical item on a check."""
    data = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml").model_dump(mode="json", by_alias=True)
    data["caps"] += [
        {"criterion": "proactivity", "cap": 1, "when": {"check": "banned_hits", "at_least": 1}, "reason": '用了"哦"'},
        {"criterion": "courtesy_patience", "cap": 2, "when": {"check": "greeting_found", "is": False},
         "reason": "未问候"},
    ]
    data["critical"] += [{"when": {"check": "banned_hits", "at_least": 2}, "reason": "多次使用禁用语"}]
    return parse_rubric(data, "inline")


def _chat(tid: str, replies: list[str], wait_s: int | None) -> Transcript:
    """Customer and agent alternating; the agent answers each message after `wait_s` (None: no timestamps)."""
    turns = []
    for i, reply in enumerate(replies):
        at = T0 + timedelta(seconds=i * 1000)
        turns.append(Turn(role=Role.customer, text=f"在吗，第{i}个问题", time=at if wait_s is not None else None))
        turns.append(Turn(role=Role.agent, text=reply,
                          time=at + timedelta(seconds=wait_s) if wait_s is not None else None))
    return Transcript(id=tid, turns=turns, platform="douyin", shop="小店", agent_id="kf-小王", source=f"{tid}.jsonl:1")


EVIDENCE = [
    [QuotedEvidence(turn=2, quote="亲，您好", verified=True)],
    [QuotedEvidence(turn=1, quote='他说"快点"\\不行', verified=False),
     QuotedEvidence(turn=3, quote="换行\n制表\t控制\x01😀\u2028", verified=True)],
    [],
]
HITS = [InjectionHit(field="turn", turn=2, pattern="ignore_rules", text='忽略以上"规则"\n'),
        InjectionHit(field="shop", pattern="fake_system", text="【系统】"),
        InjectionHit(field="turn", turn=2, pattern="ignore_rules", text='忽略以上"规则"\n')]
LATENCIES = [0.0, 1.5, 1e-07, 123456.789, 0.1 + 0.2]
CREATED = [T0, T0 + timedelta(microseconds=123456), datetime(2026, 3, 2, 10, 0, 1, 5, tzinfo=BEIJING)]


def _grade(rubric: Rubric, tid: str, repeat: int, scope: str, n: int, scores: dict[str, int | None],
           *, unscored: bool = False, extra: str | None = None, injection: list[InjectionHit] | None = None) -> Grade:
    """A stored call; `n` varies the bookkeeping and the evidence, `scores` overrides the full marks."""
    crits = rubric.criteria() if scope == "all" else [rubric.criterion(scope)]
    criteria = [
        CriterionGrade(criterion_id=c.id, score=None if unscored else scores.get(c.id, c.max),
                       reasoning="" if unscored else f'理由{n}："{c.name}"\n到位', evidence=EVIDENCE[(n + i) % 3])
        for i, c in enumerate(crits)
    ]
    if extra is not None:
        criteria.append(CriterionGrade(criterion_id=extra, score=1, reasoning="旧标准"))
    return Grade(
        key=f"{tid}-{repeat}-{scope}", transcript_id=tid, repeat=repeat, scope=scope,
        status="unscored" if unscored else "scored", criteria=criteria, model=f"模型-{n % 2}", attempts=1 + n % 3,
        prompt_tokens=100 + n, cached_tokens=None if n % 2 else 64, completion_tokens=20 + n,
        error='模型回复不是JSON: "oops"' if unscored else None, raw="{bad" if unscored else None,
        response_mode="json_object" if n % 4 == 3 else "json_schema", latency_s=LATENCIES[n % len(LATENCIES)],
        created_at=CREATED[n % len(CREATED)], injection=injection or [],
    )


def build_varied_store(store: Store, rubric: Rubric) -> None:
    """Every case listed in the module docstring, in one store."""
    run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                          template_hash="p", model="m", settings={})
    checker = ServiceChecker.load()
    chats = {
        "a-fast": _chat("a-fast", ["亲，您好，马上为您查询"], 20),
        "b-slow": _chat("b-slow", ["您好", "亲，好的"], 700),  # cap: proactivity 4→0
        "c-rude": _chat("c-rude", ["您好，在的"], 20),  # critical on the LLM's courtesy_patience 0
        "d-untimed": _chat("d-untimed", ["您好"], None),  # timing not measurable
        "e-哦哦": _chat("e-哦哦", ["哦", "哦"], 30),  # two banned replies: caps, and the critical check
        "f-哦": _chat("f-哦", ["哦", "好的亲"], 700),  # two caps on proactivity, one on courtesy_patience
        "Z-per": _chat("Z-per", ["您好"], 5),
    }
    for tid, chat in chats.items():
        store.save_transcript(chat, f"hash-{tid}", checker.check(chat, f"hash-{tid}").record())
    store.save_transcript_meta(transcript_id="h-nochecks", content_hash="h", platform=None, shop=None, agent_id=None,
                               started_at=None, n_turns=2, source=None, checks=None)
    store.save_transcript_meta(transcript_id="i-meta-only", content_hash="h", platform="taobao", shop="店",
                               agent_id="a", started_at=T0.astimezone(BEIJING), n_turns=4, source="x:9",
                               checks={"columns": {"max_wait_s": math.nan, "first_response_s": 1e16,
                                                   "share_within_rate_limit": 1 / 3, "banned_hits": 0},
                                       "note": '中文 "引号" \\ \n'})
    store.save_transcript_meta(transcript_id="中文-hand", content_hash="h", platform="tmall", shop=None, agent_id=None,
                               started_at=T0, n_turns=2, source=None,
                               checks={"columns": {"max_wait_s": math.inf, "greeting_found": False,
                                                   "banned_hits": 3, "phrase_hits": '["哦"]'}})
    # the last '"columns": ' of this record is a nested key: the exports must read the record's own
    store.save_transcript_meta(transcript_id="n-nested", content_hash="h", platform=None, shop=None, agent_id=None,
                               started_at=None, n_turns=2, source=None,
                               checks={"columns": {"max_wait_s": 700.0, "banned_hits": 0},
                                       "detail": {"n": 1, "columns": {"max_wait_s": 5.0}}})
    n = 0
    for tid, scores in [("a-fast", {}), ("n-nested", {}), ("b-slow", {"greeting": 1}),
                        ("c-rude", {"courtesy_patience": 0}), ("d-untimed", {"closing": None}), ("e-哦哦", {}),
                        ("f-哦", {"proactivity": 3}), ("g-nometa", {}), ("h-nochecks", {"tmall_rules": 6}),
                        ("中文-hand", {})]:
        for repeat in (0, 1):
            n += 1
            hits = HITS if tid == "f-哦" or (tid == "g-nometa" and repeat == 1) else None
            store.save_grade(_grade(rubric, tid, repeat, "all", n, scores, injection=hits), run, rubric.content_hash)
    for c in rubric.criteria():  # per-criterion calls; one unscored, so the row is partial
        n += 1
        store.save_grade(_grade(rubric, "Z-per", 0, c.id, n, {}, unscored=c.id == "closing"), run, rubric.content_hash)
    # the same criterion from an 'all' call and a per-criterion call of one row: the later scope wins
    store.save_grade(_grade(rubric, "Z-per", 1, "all", 90, {"greeting": 0}), run, rubric.content_hash)
    store.save_grade(_grade(rubric, "Z-per", 1, "greeting", 91, {"greeting": 3}), run, rubric.content_hash)
    tie = _grade(rubric, "a-fast", 1, "all", 95, {"greeting": 0})  # a second model's call of the same row and scope
    store.save_grade(tie.model_copy(update={"key": "a-fast-1-all-other", "model": "other"}), run, rubric.content_hash)
    store.save_grade(_grade(rubric, "k-unscored", 0, "all", 92, {}, unscored=True), run, rubric.content_hash)
    store.save_grade(_grade(rubric, "l-legacy", 0, "all", 93, {}, extra="legacy_x"), run, rubric.content_hash)
    store.save_grade(_grade(rubric, "m-other-rubric", 0, "all", 94, {}), run, "another-rubric-hash")


# ---- the reference: the model-based construction the exports used before the fast path -----------------


def reference_grade_lines(grade: Grade, adjusted: AdjustedScores) -> Iterator[dict[str, Any]]:
    """grades.jsonl lines of one validated Grade, built as dicts."""
    call = {
        "key": grade.key, "scope": grade.scope, "status": grade.status, "attempts": grade.attempts,
        "prompt_tokens": grade.prompt_tokens, "cached_tokens": grade.cached_tokens,
        "completion_tokens": grade.completion_tokens, "response_mode": grade.response_mode,
        "latency_s": grade.latency_s, "error": grade.error, "created_at": grade.created_at.isoformat(),
    }
    for cg in grade.criteria:
        yield {
            "transcript_id": grade.transcript_id,
            "repeat": grade.repeat,
            "criterion_id": cg.criterion_id,
            "status": "scored" if cg.score is not None else "unscored",
            "llm_score": cg.score,
            "score": adjusted.scores.get(cg.criterion_id),
            "adjustment": adjusted.describe(cg.criterion_id),
            "critical_failed": adjusted.critical_failed,
            "reasoning": cg.reasoning,
            "evidence": [e.model_dump() for e in cg.evidence],
            "quotes_verified": all(e.verified for e in cg.evidence),
            "injection_suspected": [hit.model_dump() for hit in grade.injection],
            "model": grade.model,
            "call": call,
        }


def write_reference(store: Store, rubric: Rubric, out: Path) -> tuple[dict[str, float | None], int]:
    """scores.csv, grades.jsonl, checks.jsonl and export_run's grades.csv from `Grade` models, one
    json.dumps per line and csv.DictWriter; returns the means and the review count `refresh_outputs` reports."""
    out.mkdir()
    sums: dict[str, float] = {d.id: 0.0 for d in rubric.dimensions} | {"total": 0.0}
    scored = needs_review = 0
    flat = []
    with (out / "scores.csv").open("w", encoding="utf-8-sig", newline="") as scores_fh, \
            (out / "grades.jsonl").open("w", encoding="utf-8") as grades_fh:
        scores = csv.DictWriter(scores_fh, fieldnames=score_columns(rubric), extrasaction="ignore")
        scores.writeheader()
        for row in iter_score_rows(store, rubric):
            adjusted = row.adjusted(rubric)
            values = row_values(row, rubric, adjusted)
            scores.writerow({k: ("" if v is None else v) for k, v in values.items()})
            for grade in row.grades:
                for line in reference_grade_lines(grade, adjusted):
                    grades_fh.write(escape_separators(json.dumps(line, ensure_ascii=False)) + "\n")
                    call = line.pop("call")
                    flat.append({**line, "evidence": json.dumps(line["evidence"], ensure_ascii=False),
                                 "injection_suspected": json.dumps(line["injection_suspected"], ensure_ascii=False),
                                 **{f"call_{k}": v for k, v in call.items()}})
            if row.injection:
                needs_review += 1
            elif row.status == "scored":
                scored += 1
                for k in sums:
                    sums[k] += values[k]
    with (out / "grades.csv").open("w", encoding="utf-8-sig", newline="") as fh:
        if flat:
            writer = csv.DictWriter(fh, fieldnames=list(flat[0]))
            writer.writeheader()
            writer.writerows(flat)
    with (out / "checks.jsonl").open("w", encoding="utf-8") as fh:
        for meta in store.iter_transcript_meta():
            keys = ("platform", "shop", "agent_id", "started_at", "n_turns", "source")
            line = {"transcript_id": meta["id"], **{k: meta[k] for k in keys}, "checks": meta["checks"]}
            fh.write(escape_separators(json.dumps(line, ensure_ascii=False)) + "\n")
    return {k: (round(v / scored, 2) if scored else None) for k, v in sums.items()}, needs_review


def _rubrics() -> dict[str, Rubric]:
    seed = load_rubric(REPO / "rubric" / "ecommerce_cs.yaml")
    return {"hooked": hooked_rubric(), "seed": seed, "no hooks": seed.model_copy(update={"caps": [], "critical": []})}


RUBRICS = _rubrics()


@pytest.fixture(scope="module")
def varied_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    with Store.open(tmp_path_factory.mktemp("varied")) as store:
        build_varied_store(store, RUBRICS["hooked"])  # every rubric here has the same content hash
        yield store


def _jsonl(path: Path) -> list[Any]:
    # splitlines() splits at U+2028 too (a quote in the varied store holds one): every line must still parse.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _bytes(folder: Path, *names: str) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names}


@pytest.mark.parametrize("name", list(RUBRICS))
def test_contract_files_are_byte_identical_to_the_model_based_construction(
        varied_store: Store, name: str, tmp_path: Path) -> None:
    rubric = RUBRICS[name]
    (tmp_path / "fast").mkdir()
    outputs = refresh_outputs(varied_store, rubric, tmp_path / "fast")
    means, needs_review = write_reference(varied_store, rubric, tmp_path / "reference")
    files = ("scores.csv", "grades.jsonl", "checks.jsonl")
    assert outputs.written and outputs.dimension_means == means and outputs.needs_review == needs_review == 3
    assert _bytes(tmp_path / "fast", *files) == _bytes(tmp_path / "reference", *files)


@pytest.mark.parametrize("name", list(RUBRICS))
def test_csv_export_is_byte_identical_to_the_model_based_construction(
        varied_store: Store, name: str, tmp_path: Path) -> None:
    rubric = RUBRICS[name]
    export_run(varied_store, rubric, "csv", tmp_path / "fast")
    write_reference(varied_store, rubric, tmp_path / "reference")
    assert _bytes(tmp_path / "fast", "scores.csv", "grades.csv") == _bytes(tmp_path / "reference", "scores.csv",
                                                                         "grades.csv")


def test_an_empty_store_exports_the_same_empty_files(tmp_path: Path) -> None:
    rubric = RUBRICS["seed"]
    with Store.open(tmp_path / "run") as store:
        refresh_outputs(store, rubric, tmp_path / "run")
        export_run(store, rubric, "csv", tmp_path / "run" / "csv")
        write_reference(store, rubric, tmp_path / "reference")
    reference = _bytes(tmp_path / "reference", "scores.csv", "grades.jsonl", "checks.jsonl", "grades.csv")
    assert _bytes(tmp_path / "run", "scores.csv", "grades.jsonl", "checks.jsonl") | _bytes(
        tmp_path / "run" / "csv", "grades.csv") == reference
    assert reference["grades.csv"] == b"" and reference["grades.jsonl"] == b""


def test_the_varied_store_holds_every_case_it_claims(varied_store: Store, tmp_path: Path) -> None:
    # The byte comparisons above prove little if the store lost a case: pin what it holds.
    rubric = RUBRICS["hooked"]
    refresh_outputs(varied_store, rubric, tmp_path)
    rows = {(r["transcript_id"], r["repeat"]): r for r in csv.DictReader((tmp_path / "scores.csv").open(
        encoding="utf-8-sig"))}
    lines, checks = _jsonl(tmp_path / "grades.jsonl"), _jsonl(tmp_path / "checks.jsonl")
    assert {r["status"] for r in rows.values()} == {"scored", "partial", "unscored"}
    assert ("Z-per", "1") in rows and "m-other-rubric" not in {tid for tid, _ in rows}
    assert {x["call"]["scope"] for x in lines if x["transcript_id"] == "Z-per"} == {"all", *(c.id for c in
                                                                                      rubric.criteria())}
    assert rows[("e-哦哦", "0")]["adjustments"].count("；") == 2 and rows[("e-哦哦", "0")]["total"] == "0"
    assert rows[("f-哦", "0")]["adjustments"] == "主动性 封顶 3→0：10分钟内无人工回复；亲切、耐心态度 封顶 4→2：未问候"
    assert rows[("f-哦", "0")]["adjustment_ids"] == "cap:proactivity;cap:courtesy_patience"
    assert rows[("n-nested", "0")]["max_wait_s"] == "700.0" and rows[("n-nested", "0")]["proactivity"] == "0"
    assert rows[("中文-hand", "0")]["max_wait_s"] == "inf" and rows[("g-nometa", "0")]["max_wait_s"] == ""
    assert rows[("l-legacy", "0")]["llm_total"] == "77"  # the unknown criterion counts in the LLM's total
    assert {x["model"] for x in lines if (x["transcript_id"], x["repeat"]) == ("a-fast", 1)} == {"模型-0", "other"}
    assert any(not x["quotes_verified"] for x in lines) and any(x["evidence"] == [] for x in lines)
    assert {x["call"]["created_at"][-6:] for x in lines} == {"+00:00", "+08:00"}
    assert {c["transcript_id"] for c in checks} >= {"h-nochecks", "i-meta-only"}
    assert math.isnan(next(c for c in checks if c["transcript_id"] == "i-meta-only")["checks"]["columns"]["max_wait_s"])
