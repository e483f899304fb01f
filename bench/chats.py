"""Synthetic Chinese e-commerce chats for benchmarks, generated deterministically and written as JSONL.

    python -m bench.chats --n 100000 --seed 1 --out /tmp/chats.jsonl

Chat i depends only on (seed, i), so the first 10,000 chats of a 100,000-chat file are the 10,000-chat
file. Chats are written one at a time: memory stays flat whatever N is. The phrases are data, in
bench/chat_phrases.yaml; a chat has 10–40 turns, customer and agent alternating from the customer,
Beijing-time timestamps, and one or two topics (发货, 退换货, 议价, 尺码, 物流) plus small talk.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

PHRASES = Path(__file__).with_name("chat_phrases.yaml")
BEIJING = timezone(timedelta(hours=8))
EPOCH = datetime(2026, 3, 1, tzinfo=BEIJING)
MIN_TURNS, MAX_TURNS = 10, 40
CACHE_DIR = Path("/tmp/kefu-bench")


@lru_cache(maxsize=1)
def load_phrases() -> dict[str, Any]:
    """The phrase bank (read once per process)."""
    data: dict[str, Any] = yaml.safe_load(PHRASES.read_text(encoding="utf-8"))
    return data


def make_chat(seed: int, index: int) -> dict[str, Any]:
    """Chat `index` of the stream for `seed`, as a JSONL transcript object."""
    bank = load_phrases()
    rng = random.Random(f"{seed}:{index}")  # str seeds hash with sha512: stable across runs and machines
    category = bank["categories"][rng.choice(sorted(bank["categories"]))]
    slots = {
        "shop": rng.choice(category["shops"]),
        "product": rng.choice(category["products"]),
        "color": rng.choice(category["colors"]),
        "size": rng.choice(category["sizes"]),
        "agent_name": rng.choice(bank["agent_names"]),
        "courier": rng.choice(bank["couriers"]),
        "city": rng.choice(bank["cities"]),
        "problem": rng.choice(bank["problems"]),
        "order": str(rng.randrange(10**17, 10**18)),
        "price": str(rng.randrange(39, 899)),
        "discount": str(rng.choice((5, 10, 12, 15, 20, 30, 50))),
        "days": str(rng.randint(2, 5)),
        "height": str(rng.randint(150, 188)),
        "weight": str(rng.randint(85, 180)),
        "foot": f"{rng.randint(220, 275) / 10:.1f}",
    }
    n_turns = rng.randint(MIN_TURNS, MAX_TURNS)
    pairs = [(rng.choice(bank["openers"]["customer"]), rng.choice(bank["openers"]["agent"]))]
    pairs += _middle(rng, bank, category["topics"], (n_turns - 4) // 2)
    pairs.append((rng.choice(bank["closers"]["customer"]), rng.choice(bank["closers"]["agent"])))
    lines = [line for pair in pairs for line in pair]
    if n_turns % 2:
        lines.append(rng.choice(("好", "👍", "谢谢亲", "嗯嗯")))
    clock = EPOCH + timedelta(days=rng.randrange(60), seconds=rng.randrange(8 * 3600, 23 * 3600))
    turns = []
    for i, line in enumerate(lines):
        role = "customer" if i % 2 == 0 else "agent"
        clock += timedelta(seconds=rng.randint(10, 180) if role == "customer" else rng.randint(3, 45))
        turns.append({"role": role, "text": line.format_map(slots), "time": clock.isoformat()})
    return {
        "id": f"bench-{seed}-{index:07d}",
        "platform": rng.choice(bank["platforms"]),
        "shop": slots["shop"],
        "agent_id": f"kf-{slots['agent_name']}",
        "turns": turns,
    }


def _middle(rng: random.Random, bank: dict[str, Any], topics: list[str], k: int) -> list[tuple[str, str]]:
    """`k` exchanges: a primary topic in its natural order, small talk mixed in, then a second topic."""
    primary, secondary = rng.sample(topics, 2)
    first = bank["topics"][primary]
    n_first = min(len(first), rng.randint(max(2, k // 2), max(2, k)))
    chosen = [first[i] for i in sorted(rng.sample(range(len(first)), n_first))]
    fillers = rng.sample(bank["fillers"], min(len(bank["fillers"]), rng.randint(0, max(0, k - n_first))))
    for filler in fillers:
        chosen.insert(rng.randint(1, len(chosen)), filler)
    second = bank["topics"][secondary]
    short = k - len(chosen)
    if short > 0:
        chosen += [second[i] for i in sorted(rng.sample(range(len(second)), min(short, len(second))))]
    while len(chosen) < k:  # only when both topics and the small talk run out
        chosen.append(rng.choice(bank["fillers"]))
    return [(c, a) for c, a in chosen[:k]]


def iter_chats(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """The first `n` chats of the stream for `seed`, one at a time."""
    for index in range(n):
        yield make_chat(seed, index)


def write_chats(path: Path, n: int, seed: int) -> Path:
    """Write `n` chats to `path` as JSONL, streaming; returns `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    with tmp.open("w", encoding="utf-8") as out:
        for chat in iter_chats(n, seed):
            out.write(json.dumps(chat, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def chats_file(n: int, seed: int = 1, cache_dir: Path = CACHE_DIR) -> Path:
    """A JSONL file of `n` chats for `seed`, generated once and reused by every benchmark."""
    path = cache_dir / f"chats-{n}-seed{seed}.jsonl"
    return path if path.is_file() else write_chats(path, n, seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, required=True, help="number of chats")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="JSONL file to write")
    args = parser.parse_args(argv)
    write_chats(args.out, args.n, args.seed)
    print(args.out)


if __name__ == "__main__":
    main()
