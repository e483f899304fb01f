"""The real embedded model end to end: join the parts, serve them, get one schema-valid grade.

Slow (a 1.1 GB join on first use, a model load, CPU inference), so it runs only with KEFU_REAL_MODEL=1,
as .ci/run's smoke step does. Then a missing `local` extra is a failure, not a skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openai import OpenAI

from pipeline.grading.prompting import PromptSet
from pipeline.grading.schema import build_grade_schema
from pipeline.llm.local.model import LocalServer, context_size_for, model_identity, prepare_model
from pipeline.models.transcript import Transcript
from pipeline.rubric.load import load_rubric

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("KEFU_REAL_MODEL") != "1", reason="set KEFU_REAL_MODEL=1 to run the real model"),
]


def test_real_model_returns_a_schema_valid_grade(tmp_path: Path) -> None:
    model_path = prepare_model()
    rubric = load_rubric(ROOT / "rubric" / "ecommerce_cs.yaml")
    criteria = rubric.criteria()[:2]
    schema = build_grade_schema(criteria)
    first_line = (ROOT / "eval_sets" / "ecommerce_cs.jsonl").read_text(encoding="utf-8").splitlines()[0]
    messages = PromptSet(rubric.language).messages(rubric, criteria, Transcript.model_validate_json(first_line))
    max_tokens = 512
    # A character is at most one token for Chinese text with this tokenizer: a safe upper bound.
    context = context_size_for(sum(len(m["content"]) for m in messages), max_tokens)

    with LocalServer(model_path, context_size=context, log_path=tmp_path / "llama-server.log") as server:
        assert server.model == model_identity(model_path)
        client = OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=900)
        assert [m.id for m in client.models.list()] == [server.model]
        reply = client.chat.completions.create(
            model=server.model,
            messages=messages,
            response_format=schema.response_format,
            temperature=0,
            max_tokens=max_tokens,
        )

    assert reply.choices[0].finish_reason == "stop"
    grade = schema.model.model_validate_json(reply.choices[0].message.content or "")
    for criterion in criteria:
        assert getattr(grade, criterion.id).score in schema.scores_allowed(criterion.id)


def test_kefu_grade_without_an_endpoint_uses_the_offline_model(tmp_path: Path) -> None:
    """The production path end to end: no key, no URL → the embedded server, the real client, the store."""
    import csv
    import subprocess
    import sys

    from pipeline.store.store import Store

    ids = tmp_path / "ids.txt"
    ids.write_text("demo-024\n", encoding="utf-8")  # the shortest demo chat
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_MODEL"))}
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "grade", str(ROOT / "eval_sets" / "ecommerce_cs.jsonl"), "--ids", str(ids),
         "--rubric", str(ROOT / "rubric" / "dch1_quality.yaml"), "--out", str(out)],
        env=env, capture_output=True, text=True, timeout=1800, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "embedded offline model" in " ".join(proc.stderr.split())
    [row] = list(csv.DictReader((out / "scores.csv").open(encoding="utf-8-sig")))
    assert row["transcript_id"] == "demo-024" and row["model"].startswith("qwen2.5-coder-1.5b-instruct-q4_k_m@")
    rubric = load_rubric(ROOT / "rubric" / "dch1_quality.yaml")
    with Store.open(out) as store:
        [grade] = list(store.iter_grades())
    # llama.cpp constrains decoding to the JSON schema, so the reply must validate and every score be a level.
    assert grade.status == "scored", grade.error
    for cg in grade.criteria:
        assert cg.score in rubric.criterion(cg.criterion_id).points
    assert row["total"] != ""


def test_the_same_demo_chat_gets_the_same_scores_twice(tmp_path: Path) -> None:
    """Greedy sampling, a fixed seed and a fixed thread count: two runs of the demo's rubric agree score for score.

    Each run starts its own server, as two `kefu demo` runs do, so nothing is shared between them but the input.
    """
    import subprocess
    import sys

    from pipeline.store.store import Store

    ids = tmp_path / "ids.txt"
    ids.write_text("demo-024\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_MODEL"))}
    runs: list[dict[str, int | None]] = []
    for name in ("first", "second"):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline", "grade", str(ROOT / "eval_sets" / "ecommerce_cs.jsonl"), "--ids",
             str(ids), "--rubric", str(ROOT / "rubric" / "ecommerce_cs.yaml"), "--out", str(out)],
            env=env, capture_output=True, text=True, timeout=1800, check=False,
        )
        assert proc.returncode == 0, proc.stderr
        with Store.open(out) as store:
            [grade] = list(store.iter_grades())
        assert grade.status == "scored", grade.error
        runs.append({cg.criterion_id: cg.score for cg in grade.criteria})
    assert runs[0] == runs[1]
