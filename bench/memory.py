"""Memory of a large run, and the cost of resuming it: `python -m pipeline grade` on 100,000 chats.

    python -m bench.memory                     # N = 100,000, L = 0, C = 64
    python -m bench.memory --n 20000           # a shorter run (RSS is still sampled at 10,000)

Runs the real CLI as a subprocess on one JSONL file of generated chats (bench/chats.py), with the mock
server in another process. While it runs, the CLI's resident memory (VmRSS) is sampled twice a second
together with the number of grades in its store, so the table can show RSS when 10,000 and when all N
grades were stored, and the peak (VmHWM, then the kernel's ru_maxrss at exit). Then the same command
runs again over the finished store: that run sends no request and only skips finished keys; its wall
time (process start and the closing exports included) and the runner's own elapsed time are reported.
Finally the store's finished keys and finished lines are loaded in-process, as the runner and its
`LineMemo` load them at a run's start, to show what the resume structures cost in memory.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from bench.chats import chats_file
from bench.harness import (
    REPO,
    command_env,
    compile_package,
    describe_machine,
    last_run_summary,
    load_average,
    mock_server,
    print_table,
    process_rss_mb,
)

MODEL = "mock-model"
SAMPLE_EVERY_S = 0.5


@dataclass
class RunTrace:
    """What one CLI run did, sampled from outside."""

    wall: float = 0.0
    peak_rss_mb: float = 0.0
    cpu_s: float = 0.0
    samples: list[tuple[float, int, float]] = field(default_factory=list)
    """(seconds since start, grades stored, VmRSS MB)."""

    def rss_when(self, grades: int) -> float | None:
        """RSS at the first sample that saw at least `grades` grades stored."""
        return next((rss for _, count, rss in self.samples if count >= grades), None)


def run_cli(command: list[str], db: Path) -> RunTrace:
    """Run the CLI, sampling its RSS and the store's grade count until it exits."""
    env = command_env()
    trace = RunTrace()
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    hwm = 0.0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # reaps the child and keeps its rusage
        if pid:
            break
        try:
            rss, hwm = process_rss_mb(proc.pid)
        except (FileNotFoundError, KeyError):
            continue  # exited between wait4 and the read: the next wait4 reaps it
        trace.samples.append((time.perf_counter() - t0, _count_grades(db), rss))
        time.sleep(SAMPLE_EVERY_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    trace.wall = time.perf_counter() - t0
    assert proc.stderr is not None
    if proc.returncode != 0:
        raise SystemExit(f"kefu grade failed:\n{proc.stderr.read().decode()[-2000:]}")
    trace.peak_rss_mb = max(hwm, usage.ru_maxrss / 1024)
    trace.cpu_s = usage.ru_utime + usage.ru_stime
    return trace


def _count_grades(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM grades").fetchone()[0])
    except sqlite3.OperationalError:  # the CLI is still creating the tables
        return 0


class LoadCost(NamedTuple):
    """What loading one resume structure cost."""

    entries: int
    seconds: float
    held_mb: float
    """Memory still allocated once loaded (tracemalloc): what the run holds."""
    peak_mb: float
    """The most allocated while loading (one chunk of rows, the sort)."""


def _traced_load(load: Callable[[], Sized]) -> LoadCost:
    tracemalloc.start()
    t0 = time.perf_counter()
    loaded = load()
    seconds = time.perf_counter() - t0
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return LoadCost(len(loaded), seconds, held / 1024 / 1024, peak / 1024 / 1024)


def resume_set_cost(out_dir: Path) -> tuple[LoadCost, LoadCost]:
    """(finished keys, finished lines): loaded the way the runner and its LineMemo load them at start."""
    import numpy  # noqa: F401  # loaded by the reader before any of this: not a cost of the structures

    from pipeline.store.store import Store

    with sqlite3.connect(out_dir / "kefu.sqlite") as conn:  # the run's fingerprint: the one with the most lines
        row = conn.execute("SELECT fingerprint FROM finished_lines GROUP BY fingerprint ORDER BY COUNT(*) DESC"
                           " LIMIT 1").fetchone()
    with Store.open(out_dir) as store:
        keys = _traced_load(store.finished_keys)
        lines = _traced_load(lambda: store.finished_lines(row[0] if row else ""))
    return keys, lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="chats to grade")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--early", type=int, default=10_000, help="the grade count of the early RSS sample")
    args = parser.parse_args(argv)
    chats = chats_file(args.n)
    compile_package()
    with mock_server(0.0) as server, tempfile.TemporaryDirectory(prefix="kefu-bench-mem-") as tmp:
        out = Path(tmp)
        command = [sys.executable, "-m", "pipeline", "grade", str(chats), "--base-url", server.base_url,
                   "--model", MODEL, "--concurrency", str(args.concurrency), "--out", str(out)]
        load_first = load_average()
        first = run_cli(command, out / "kefu.sqlite")
        first_summary = last_run_summary(out)
        load_second = load_average()
        second = run_cli(command, out / "kefu.sqlite")
        second_summary = last_run_summary(out)
        keys, lines = resume_set_cost(out)
    early, late = first.rss_when(args.early), first.rss_when(args.n)
    print(f"Machine: {describe_machine()}\n")
    print(f"    python -m pipeline grade chats-{args.n}.jsonl --base-url URL --model {MODEL} "
          f"--concurrency {args.concurrency} --out DIR      # run twice\n")
    growth = f"{late / early - 1:+.1%}" if early and late else "—"
    print_table(
        ["run", "N", "graded", "skipped", "wall (s)", "runner elapsed (s)", "transcripts/s", "CPU (s)",
         f"RSS at {args.early:,} (MB)", f"RSS at {args.n:,} (MB)", "growth", "peak RSS (MB)", "load at start"],
        [
            ["first", args.n, first_summary["graded"], first_summary["skipped"], f"{first.wall:.1f}",
             f"{first_summary['elapsed_s']:.1f}", f"{args.n / first_summary['elapsed_s']:.0f}",
             f"{first.cpu_s:.1f}", f"{early:.0f}" if early else "—", f"{late:.0f}" if late else "—", growth,
             f"{first.peak_rss_mb:.0f}", load_first],
            ["resume (same command)", args.n, second_summary["graded"], second_summary["skipped"],
             f"{second.wall:.1f}", f"{second_summary['elapsed_s']:.1f}", "—", f"{second.cpu_s:.1f}", "—", "—", "—",
             f"{second.peak_rss_mb:.0f}", load_second],
        ],
    )
    print()
    for what, cost in (("key", keys), ("line", lines)):
        per_entry = cost.held_mb * 1024 * 1024 / max(1, cost.entries)
        print(f"Resume {what}s: {cost.entries:,} finished {what}s loaded in {cost.seconds:.2f} s, "
              f"{cost.held_mb:.1f} MB held ({per_entry:.0f} bytes a {what}), "
              f"{cost.peak_mb:.1f} MB at the peak of loading.")
    if second_summary["graded"]:
        print(f"\nWARNING: the second run graded {second_summary['graded']:,} transcripts instead of skipping them: "
              "a resume key input (rubric, templates, model, sampling or options) changed between the runs, "
              "so the second row is not a resume.")


if __name__ == "__main__":
    main()
