"""How long the review workbench takes to start and to serve its overview and a chat page on a big run.

    python -m bench.review_load                  # 100,000 chats (the issue's target: each page under 2 s)
    python -m bench.review_load --n 2000 --keep /tmp/review-2000

Builds a run folder of N generated chats (bench/chats.py, written as the run's JSONL input so the chat
page reads its text back from file:line) with their stored checks and one synthetic 13-criterion grade
each (bench/exports_speed.py's `synthetic_grade`), then serves it with uvicorn on 127.0.0.1 and times
real HTTP GETs with httpx: the first overview (which waits for the overview table: the store's flat
figures read column-wise, final scores over whole columns), the overview again, a filtered overview,
the first chat page (which indexes the JSONL file's line offsets), and other chat pages. Each later
figure is the fastest of `--repeat` GETs. Nothing is cached on disk, so every start is a first start;
the table's read is also timed alone in this process, in CPU seconds (what load on a shared machine
does not inflate).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import uvicorn

from bench.chats import write_chats
from bench.exports_speed import RUBRIC, synthetic_grade
from bench.harness import describe_machine, print_table
from pipeline.checks.checker import ServiceChecker
from pipeline.models.transcript import Transcript
from pipeline.review import create_app
from pipeline.review.runs import ReviewRun
from pipeline.rubric.load import load_rubric
from pipeline.store.store import Store


def build_run(folder: Path, n: int, seed: int = 1) -> list[str]:
    """A run folder of `n` graded chats whose input file is folder/chats.jsonl; returns the chat ids."""
    rubric = load_rubric(RUBRIC)
    src = write_chats(folder / "chats.jsonl", n, seed)
    checker = ServiceChecker.load()
    rng = random.Random(seed)
    started = datetime(2026, 3, 1, tzinfo=UTC)
    ids = []
    with Store.open(folder / "out") as store, src.open(encoding="utf-8") as lines:
        run = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash=rubric.content_hash,
                              template_hash="bench", model="mock-model",
                              settings={"rubric": rubric.model_dump(mode="json", by_alias=True)})
        for number, line in enumerate(lines, 1):
            chat = Transcript.model_validate(json.loads(line) | {"source": f"{src}:{number}"})
            store.save_grade(synthetic_grade(rubric, chat, started, rng), run, rubric.content_hash,
                             meta=(chat, f"hash-{chat.id}", checker.check(chat).record()))
            ids.append(chat.id)
    return ids


def timed_get(http: httpx.Client, url: str) -> float:
    start = time.perf_counter()
    answer = http.get(url)
    elapsed = time.perf_counter() - start
    assert answer.status_code == 200, (url, answer.status_code)
    return elapsed


def table_cpu(folder: Path) -> float:
    """CPU seconds to read the overview's table (`read_figures` and the decisions) from the store."""
    run = ReviewRun(folder / "out")
    start = time.process_time()
    run.overview_index()
    return time.process_time() - start


def measure(folder: Path, ids: list[str], repeat: int, start_name: str) -> list[list[str]]:
    """Start the app, GET its pages, return the table's rows."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    app = create_app([folder / "out"])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    startup = time.perf_counter() - start
    rng = random.Random(7)
    rows = [[f"{start_name}: app built, listening", f"{startup:.2f}"]]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as http:
            rows.append(["overview, first (waits for the table)", f"{timed_get(http, '/'):.2f}"])
            rows.append(["overview by day", f"{timed_get(http, '/?by=day'):.2f}"])
            rows.append(["overview", f"{min(timed_get(http, '/') for _ in range(repeat)):.2f}"])
            filtered = "/?min_total=40&critical=0&by=day"
            rows.append(["overview, filtered", f"{min(timed_get(http, filtered) for _ in range(repeat)):.2f}"])
            rows.append(["chat page, first (indexes the JSONL)", f"{timed_get(http, f'/chats/{ids[0]}'):.2f}"])
            chats = [min(timed_get(http, f"/chats/{rng.choice(ids)}") for _ in range(repeat)) for _ in range(5)]
            rows.append(["chat page (5 random chats, worst)", f"{max(chats):.2f}"])
            rows.append(["labelling queue (20 chats, random)",
                         f"{min(timed_get(http, '/queue?n=20') for _ in range(repeat)):.2f}"])
    finally:
        server.should_exit = True
        thread.join(30)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="chats in the run")
    parser.add_argument("--repeat", type=int, default=3, help="GETs per later figure; the fastest is kept")
    parser.add_argument("--keep", type=Path, help="build the run under this folder and keep it (reused if there)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kefu-review-") as tmp:
        folder = args.keep or Path(tmp)
        ids_file = folder / "ids.json"
        if ids_file.is_file():
            ids = json.loads(ids_file.read_text(encoding="utf-8"))
        else:
            build_start = time.perf_counter()
            ids = build_run(folder, args.n)
            ids_file.write_text(json.dumps(ids), encoding="utf-8")
            print(f"built a run of {args.n:,} chats in {time.perf_counter() - build_start:.0f} s\n")
        rows = measure(folder, ids, args.repeat, "start")
        rows.append(["overview table read alone (CPU s)", f"{table_cpu(folder):.2f}"])
    print(f"kefu review over {len(ids):,} chats, wall seconds per HTTP GET "
          f"(fastest of {args.repeat} after the first)\n")
    print_table(["what", "s"], rows)
    print(f"\nMachine: {describe_machine(('starlette', 'uvicorn', 'pandas', 'jinja2'))}")


if __name__ == "__main__":
    main()
