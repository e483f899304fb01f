"""Cost per row of the closing exports (`exports.refresh_outputs`): scores.csv, grades.jsonl, checks.jsonl.

    python -m bench.exports_speed                        # N = 2,000 and 20,000 rows
    python -m bench.exports_speed --n 1280 --keep /tmp/exports-1280

Builds a store of N generated chats (bench/chats.py) with their stored checks and one synthetic
'all'-scope grade per chat under the seed rubric (rubric/ecommerce_cs.yaml, caps and a critical item
included): scores drawn from the criteria's levels, Chinese reasoning, one or two quotes from the
chat's agent turns (about one in ten altered and unverified), about 2% of criteria unscored and 1% of
grades unscored. A row is a transcript × repeat, 13 lines in grades.jsonl. Then refresh_outputs is
timed with its files removed before each call, so it always writes; the fastest of `--repeat` calls
is kept (on a shared machine the other runs only ever add time), in wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.chats import iter_chats
from bench.harness import REPO, describe_machine, print_table
from pipeline.checks.checker import ServiceChecker
from pipeline.models.grade import CriterionGrade, Grade, QuotedEvidence
from pipeline.models.transcript import Role, Transcript
from pipeline.outputs.exports import refresh_outputs
from pipeline.rubric.load import load_rubric
from pipeline.rubric.model import Rubric
from pipeline.store.store import Store

RUBRIC = REPO / "rubric" / "ecommerce_cs.yaml"
REASONS = ("客服及时回应，语气亲切，使用了“亲”等称呼", "回答准确但未主动推荐搭配商品",
           "对顾客的疑问先致歉再解释，处理得当", "未按流程核对订单信息", "结束语规范，礼貌道别")


def synthetic_grade(rubric: Rubric, chat: Transcript, run_started: datetime, rng: random.Random) -> Grade:
    """One 'all'-scope grade of `chat` as the runner would store it."""
    unscored = rng.random() < 0.01
    agent_turns = [(i, t.text) for i, t in enumerate(chat.turns, 1) if t.role is Role.agent]
    criteria = []
    for c in rubric.criteria():
        evidence = []
        for turn, text in rng.sample(agent_turns, min(len(agent_turns), rng.randint(1, 2))):
            altered = rng.random() < 0.1  # a quote the model got wrong: not found in the turn
            quote = text[:20] + ("。" if altered else "")
            evidence.append(QuotedEvidence(turn=turn, quote=quote, verified=not altered,
                                           verify_failed="not_in_turn" if altered else None))
        score = None if unscored or rng.random() < 0.02 else rng.choice(c.levels).points
        criteria.append(CriterionGrade(criterion_id=c.id, score=score, reasoning=rng.choice(REASONS) * 2,
                                       evidence=[] if score is None else evidence))
    return Grade(
        key=f"{chat.id}-0-all", transcript_id=chat.id, repeat=0, scope="all",
        status="unscored" if unscored else "scored", criteria=criteria, model="mock-model",
        attempts=1 + (rng.random() < 0.05), prompt_tokens=rng.randint(1500, 4000),
        cached_tokens=rng.choice((None, 1024)), completion_tokens=rng.randint(300, 900),
        error="the model's reply did not match the schema" if unscored else None,
        latency_s=round(rng.uniform(0.5, 3.0), 3), created_at=run_started + timedelta(seconds=rng.uniform(0, 600)),
    )


def build_store(out_dir: Path, n: int, rubric: Rubric, seed: int = 1) -> Store:
    """A store of `n` generated chats, each with its checks and one grade."""
    store = Store.open(out_dir)
    run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                          template_hash="bench", model="mock-model", settings={})
    checker = ServiceChecker.load()
    rng = random.Random(seed)
    started = datetime(2026, 3, 1, tzinfo=UTC)
    for raw in iter_chats(n, seed):
        chat = Transcript.model_validate(raw)
        store.save_grade(synthetic_grade(rubric, chat, started, rng), run, rubric.content_hash,
                         meta=(chat, f"hash-{chat.id}", checker.check(chat).record()))
    return store


def time_refresh(store: Store, rubric: Rubric, out_dir: Path, repeat: int) -> tuple[float, float]:
    """Fastest (wall, CPU) seconds of `repeat` forced calls of refresh_outputs."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeat):
        (out_dir / "scores.csv").unlink(missing_ok=True)  # a missing file forces the rewrite
        wall, cpu = time.perf_counter(), time.process_time()
        outputs = refresh_outputs(store, rubric, out_dir)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
        assert outputs.written
    return best_wall, best_cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, nargs="+", default=[2000, 20000], help="rows (chats) per store")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per store; the fastest is kept")
    parser.add_argument("--keep", type=Path, help="build the stores under this folder and keep them")
    args = parser.parse_args(argv)
    rubric = load_rubric(RUBRIC)
    rows = []
    with tempfile.TemporaryDirectory(prefix="kefu-exports-") as tmp:
        for n in args.n:
            out_dir = (args.keep or Path(tmp)) / f"n{n}"
            with build_store(out_dir, n, rubric) as store:
                wall, cpu = time_refresh(store, rubric, out_dir, args.repeat)
            size_mb = sum((out_dir / f).stat().st_size for f in ("scores.csv", "grades.jsonl", "checks.jsonl")) / 1e6
            rows.append([f"{n:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{wall / n * 1000:.3f}", f"{cpu / n * 1000:.3f}",
                         f"{size_mb:.1f}"])
    print(f"refresh_outputs, forced write, fastest of {args.repeat}\n")
    print_table(["rows", "wall s", "CPU s", "wall ms/row", "CPU ms/row", "output MB"], rows)
    print(f"\nMachine: {describe_machine(('pydantic',))}")


if __name__ == "__main__":
    main()
