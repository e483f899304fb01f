"""CPU per transcript of the service checks (`ServiceChecker.check`), and a golden-file equivalence check.

    python -m bench.checks_speed                                   # N = 2,000 generated chats + the eval set
    python -m bench.checks_speed --n 500 --write-golden /tmp/checks-golden.jsonl
    python -m bench.checks_speed --verify /tmp/checks-golden.jsonl # same chats, records must be identical

The runner calls the checks once per transcript on its event loop, so their CPU caps throughput.
Each transcript is checked once untimed (warm-up) and then timed with time.process_time for the
timing part (`measure_session`), the phrase part (`PhraseChecker.check`), the whole
`ServiceChecker.check`, and the check plus the `.record()` the runner stores. Each is timed
`--repeat` times per transcript and the fastest kept: on a shared machine the other runs only ever
add time. The chats are bench/chats.py's stream for the seed, plus the 34 chats of
eval_sets/ecommerce_cs.jsonl.

A golden file holds every transcript's `.record()` without its `checker` fingerprint (which hashes
the checking code itself, so it changes with any edit); `--verify` regenerates the same chats, checks
them with the current code and exits non-zero naming the first transcripts whose records differ.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.chats import iter_chats
from bench.harness import REPO, describe_machine, print_table
from pipeline.checks.checker import DEFAULT_LEXICONS, ServiceChecker
from pipeline.checks.lexicons import load_lexicons
from pipeline.checks.phrases import PhraseChecker
from pipeline.checks.timing import ShopCalendar, TimingThresholds, measure_session
from pipeline.inputs.transcripts import read_transcripts
from pipeline.models.transcript import Reject, Transcript

EVAL_SET = REPO / "eval_sets" / "ecommerce_cs.jsonl"


def load_chats(n: int, seed: int) -> list[Transcript]:
    """The eval set's transcripts, then the first `n` generated chats for `seed`."""
    chats: list[Transcript] = []
    for item in read_transcripts([EVAL_SET]):
        if isinstance(item, Reject):
            raise SystemExit(f"{EVAL_SET}: {item.reason}")
        chats.append(item)
    chats.extend(Transcript.model_validate(chat) for chat in iter_chats(n, seed))
    return chats


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the code fingerprint, as JSON would store it."""
    cleaned: dict[str, Any] = json.loads(json.dumps(record, ensure_ascii=False))
    cleaned.pop("checker")
    return cleaned


def write_golden(path: Path, chats: list[Transcript], checker: ServiceChecker, n: int, seed: int) -> None:
    """One header line (n, seed), then one line per transcript: its id and comparable record."""
    with path.open("w", encoding="utf-8") as out:
        out.write(json.dumps({"n": n, "seed": seed}) + "\n")
        for t in chats:
            line = {"id": t.id, "record": comparable(checker.check(t).record())}
            out.write(json.dumps(line, ensure_ascii=False) + "\n")


def read_golden(path: Path) -> tuple[dict[str, int], Iterator[dict[str, Any]]]:
    """The golden file's header and its transcript lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return json.loads(lines[0]), (json.loads(line) for line in lines[1:])


def verify_golden(path: Path, checker: ServiceChecker) -> int:
    """Check the golden file's chats again; print the differences; the number of transcripts that differ."""
    header, expected = read_golden(path)
    chats = load_chats(header["n"], header["seed"])
    differ = 0
    count = 0
    for t, want in zip(chats, expected, strict=True):
        count += 1
        got = comparable(checker.check(t).record())
        if want["id"] != t.id or got != want["record"]:
            differ += 1
            if differ <= 5:
                print(f"DIFFERS: {t.id}\n  golden: {json.dumps(want['record'], ensure_ascii=False)[:2000]}"
                      f"\n  now:    {json.dumps(got, ensure_ascii=False)[:2000]}")
    print(f"verified {count} transcripts against {path}: {differ} differ")
    return differ


def time_ms(call: Callable[[Transcript], object], transcript: Transcript, repeat: int) -> float:
    """CPU milliseconds of the fastest of `repeat` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        call(transcript)
        best = min(best, time.process_time() - start)
    return best * 1000


def summarize(name: str, values: list[float]) -> list[object]:
    """One table row: mean, median and 95th percentile in ms."""
    p95 = statistics.quantiles(values, n=20)[-1]
    return [name, f"{statistics.fmean(values):.3f}", f"{statistics.median(values):.3f}", f"{p95:.3f}"]


def measure(chats: list[Transcript], checker: ServiceChecker, repeat: int) -> list[list[object]]:
    """Rows of the table: timing, phrases, the whole check (also on 25-turn chats alone), and the stored
    record, per transcript."""
    lexicons = load_lexicons(DEFAULT_LEXICONS)
    phrases = PhraseChecker(lexicons)
    thresholds, calendar = TimingThresholds(), ShopCalendar()
    parts: dict[str, Callable[[Transcript], object]] = {
        "timing (measure_session)": lambda t: measure_session(t, thresholds, calendar),
        "phrases (PhraseChecker.check)": phrases.check,
        "ServiceChecker.check": checker.check,
        "check + .record()": lambda t: checker.check(t).record(),
    }
    samples: dict[str, list[float]] = {name: [] for name in parts}
    for t in chats:
        checker.check(t).record()  # warm-up: first-call caches, allocator
        for name, part in parts.items():
            samples[name].append(time_ms(part, t, repeat))
    whole = samples["ServiceChecker.check"]
    at_25 = [ms for t, ms in zip(chats, whole, strict=True) if len(t.turns) == 25]
    rows = [summarize(name, values) for name, values in samples.items()]
    rows.insert(3, summarize(f"ServiceChecker.check, 25-turn chats ({len(at_25)})", at_25))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="generated chats (the eval set is always added)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="timings per transcript and part; the fastest is kept")
    parser.add_argument("--write-golden", type=Path, metavar="GOLDEN", help="write the records to GOLDEN and stop")
    parser.add_argument("--verify", type=Path, metavar="GOLDEN", help="compare with GOLDEN's records and stop")
    args = parser.parse_args(argv)
    checker = ServiceChecker.load()
    if args.verify:
        sys.exit(1 if verify_golden(args.verify, checker) else 0)
    chats = load_chats(args.n, args.seed)
    if args.write_golden:
        write_golden(args.write_golden, chats, checker, args.n, args.seed)
        print(f"wrote {len(chats)} records to {args.write_golden}")
        return
    turns = statistics.fmean(len(t.turns) for t in chats)
    print(f"{len(chats)} transcripts ({args.n} generated, seed {args.seed}, + {EVAL_SET.name}), "
          f"{turns:.1f} turns on average; fastest of {args.repeat} per transcript and part")
    print_table(["part", "mean ms", "p50 ms", "p95 ms"], measure(chats, checker, args.repeat))
    print(f"\nMachine: {describe_machine(('pydantic',))}")


if __name__ == "__main__":
    main()
