"""Prompt-injection patterns (pipeline/data/injection.yaml): what they flag on real chats, and their CPU per chat.

    python -m bench.injection            # DCH-1 (when present), the eval set and 2,000 generated chats
    python -m bench.injection --n 500

A flag on a real customer-service dialogue is a false positive (it sends a chat to a person for
nothing); the DCH-1 dialogues (3,700 Chinese Weibo customer-service dialogues and their English
translations) contain no text addressed to a grader. The grader runs `find_injection` once per
call, so its CPU is per call; each chat is timed three times with time.process_time and the fastest
kept (other people's runs on this machine only ever add time).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Iterable

from bench.chats import iter_chats
from bench.harness import REPO, describe_machine, print_table
from pipeline.checks.injection import find_injection
from pipeline.models.transcript import Role, Transcript, Turn
from pipeline.paths import DCH1_DIR

DCH1 = DCH1_DIR


def _dch1(name: str) -> list[Transcript]:
    dialogues = json.loads((DCH1 / name).read_text(encoding="utf-8"))
    return [Transcript(id=str(d["id"]), turns=[
        Turn(role=Role.customer if t["sender"] == "customer" else Role.agent, text=u)
        for t in d["turns"] for u in t["utterances"] if u
    ]) for d in dialogues if any(u for t in d["turns"] for u in t["utterances"])]


def _row(name: str, chats: Iterable[Transcript]) -> list[object]:
    times, turns, flagged = [], 0, Counter[str]()
    for chat in chats:
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            hits = find_injection(chat)
            best = min(best, time.process_time() - start)
        times.append(best * 1000)
        turns += len(chat.turns)
        for pattern in {h.pattern for h in hits}:
            flagged[pattern] += 1
    cuts = statistics.quantiles(times, n=20)
    shown = ", ".join(f"{k} {v}" for k, v in sorted(flagged.items())) or "—"
    return [name, len(times), f"{turns / len(times):.1f}", shown,
            f"{statistics.fmean(times):.3f}", f"{cuts[9]:.3f}", f"{cuts[18]:.3f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="generated chats (bench/chats.py, seed 1)")
    args = parser.parse_args()
    print(describe_machine(("pydantic", "pyyaml")) + "\n")
    eval_set = [Transcript.model_validate_json(line)
                for line in (REPO / "eval_sets" / "ecommerce_cs.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [_row("eval_sets/ecommerce_cs.jsonl", eval_set),
            _row(f"bench/chats.py, seed 1 (first {args.n:,})",
                 (Transcript.model_validate(c) for c in iter_chats(args.n, 1)))]
    if DCH1.exists():
        rows += [_row(f"DCH-1 {name}", _dch1(name)) for name in ("train_data_cn.json", "train_data_en.json")]
    print_table(["chats", "n", "turns/chat", "flagged (chats per pattern)", "mean ms/chat", "p50", "p95"], rows)


if __name__ == "__main__":
    main()
