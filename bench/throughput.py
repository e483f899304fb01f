"""Throughput and client CPU of grading, against the mock server in a separate process.

    python -m bench.throughput                 # the L × C grid (library path, one child process per cell)
    python -m bench.throughput --cli           # `python -m pipeline grade` end to end: L=1 s, C=128, N=1,280
    python -m bench.throughput --breakdown     # where a transcript's client CPU goes, step by step
    python -m bench.throughput --sdk-share     # L=0 cells with the SDK, and with its request path swapped out
    python -m bench.throughput --rate-limited  # the CLI against a provider's token-bucket limits (429s, headers)

Every transcript is graded in all-criteria mode against rubric/ecommerce_cs.yaml (one structured call per
transcript). Each grid cell runs in a fresh child process, so its CPU and peak RSS are its own; the clock
and the CPU reading cover `run_grading` only (reading the JSONL included, imports and set-up excluded).
The latency-bound ideal is ceil(N/C)·L: what a client with zero overhead would take.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.chats import chats_file
from bench.harness import (
    REPO,
    ServerProcess,
    command_env,
    compile_package,
    describe_machine,
    last_run_summary,
    load_average,
    mock_server,
    print_table,
    self_cpu_seconds,
)

RUBRIC = REPO / "rubric/ecommerce_cs.yaml"
MODEL = "mock-model"
# (latency, concurrency, N): N = 2000 at L = 0; otherwise enough waves that the ideal is 4 s.
GRID = [(0.0, c, 2000) for c in (16, 64, 256)] + [(0.2, c, 20 * c) for c in (16, 64, 256)] + [
    (1.0, c, 4 * c) for c in (16, 64, 256)
]


def ideal_seconds(n: int, concurrency: int, latency: float) -> float:
    """The latency-bound ideal: ceil(N/C) waves of L seconds each."""
    return math.ceil(n / concurrency) * latency


# --- one cell, in a child process ---------------------------------------------------------------


async def grade_cell(chats: Path, n: int, concurrency: int, base_url: str, transport: str = "sdk",
                     start: tuple[float | None, ...] = ()) -> dict[str, Any]:
    """Grade the first `n` chats of `chats` through `run_grading`; wall time and CPU of the run itself.

    `transport` "aiohttp" swaps the SDK's request path for a plain aiohttp POST of the same body
    (see `_aiohttp_client`): a measurement of what the SDK costs, not a path kefu-qa has. `start`: the
    requests and tokens a second (and bursts) the pacer starts at (`Limits`), as `kefu grade` does from the
    limits an earlier run learned.
    """
    import openai  # noqa: F401  # LLMClient imports the SDK on its first request: keep imports out of the timing

    from pipeline.grading.grader import Grader
    from pipeline.grading.prompting import PromptSet
    from pipeline.grading.runner import RunOptions, run_grading
    from pipeline.inputs.tokens import estimate_tokens
    from pipeline.inputs.transcripts import read_transcripts
    from pipeline.llm.client import Endpoint, LLMClient
    from pipeline.llm.pacing import Limits, Pacer
    from pipeline.models.grade import Sampling
    from pipeline.rubric.load import load_rubric
    from pipeline.store.store import Store

    rubric = load_rubric(RUBRIC)
    prompts = PromptSet(rubric.language)
    # Paced as `kefu grade` is (about 2 µs a request when nothing is refused).
    client = (LLMClient(Endpoint(base_url, None), pacer=Pacer(concurrency, start=Limits(*start)))
              if transport == "sdk" else _aiohttp_client(base_url))
    grader = Grader(rubric, prompts, client, model=MODEL, sampling=Sampling())
    system_tokens = estimate_tokens(prompts.system(rubric, rubric.criteria()))
    with tempfile.TemporaryDirectory(prefix="kefu-bench-") as tmp, Store.open(Path(tmp)) as store:
        items = itertools.islice(read_transcripts([chats]), n)
        cpu0, t0 = self_cpu_seconds(), time.perf_counter()
        summary = await run_grading(items, grader=grader, store=store, options=RunOptions(concurrency=concurrency),
                                    rejects_path=Path(tmp) / "rejects.jsonl")
        wall, cpu = time.perf_counter() - t0, self_cpu_seconds() - cpu0
    await client.close()
    return {"wall": wall, "cpu": cpu, "graded": summary.graded, "unscored": summary.unscored,
            "prompt_tokens": summary.prompt_tokens, "cached_tokens": summary.cached_tokens,
            "completion_tokens": summary.completion_tokens, "slow_down": summary.slow_down,
            "system_tokens_estimate": system_tokens,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _aiohttp_client(base_url: str) -> Any:
    """An LLMClient whose `chat` POSTs the same bytes with aiohttp (the SDK's own transport library) and
    reads the reply the same way, skipping the SDK's request building, retry loop and httpx layer.

    No error mapping: a bench server that answers 200 is all it is for.
    """
    import aiohttp

    from pipeline.llm import client as llm

    class AiohttpClient(llm.LLMClient):
        session: aiohttp.ClientSession | None = None

        async def chat(self, messages: list[dict[str, str]], *, model: str, response_format: dict[str, Any],
                       temperature: float | None, seed: int | None, max_tokens: int | None) -> llm.ChatResult:
            if self.session is None:
                self.session = aiohttp.ClientSession(headers={"Authorization": "Bearer not-needed"})
            head = llm._dumps(llm.chat_request_params(messages, model=model, temperature=temperature, seed=seed,
                                                     max_tokens=max_tokens))
            body = f'{head[:-1]},"response_format":{self._format_json(response_format)}}}'.encode()
            async with self.session.post(f"{base_url}/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"}) as response:
                return llm.parse_chat_completion(await response.read())

        async def close(self) -> None:
            if self.session is not None:
                await self.session.close()

    return AiohttpClient(llm.Endpoint(base_url, None))


def run_cell(latency: float, concurrency: int, n: int, chats: Path, server_url: str,
             server_cpu: Callable[[], float], transport: str = "sdk",
             start: tuple[float | None, ...] = ()) -> dict[str, Any]:
    """Run one grid cell in a fresh Python process; returns its measurements."""
    before = server_cpu()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.throughput", "--cell", str(chats), str(n), str(concurrency), server_url,
         "--transport", transport, "--start", *("-" if value is None else repr(value) for value in start)],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(latency=latency, concurrency=concurrency, n=n, server_cpu=server_cpu() - before,
                  load=load_average())
    return result


def grid(cells: Iterable[tuple[float, int, int]]) -> None:
    """Run the grid, one server per latency, and print the table."""
    cells = list(cells)
    chats = chats_file(max(n for _, _, n in cells))
    rows = []
    for latency, group in itertools.groupby(cells, key=lambda cell: cell[0]):
        with mock_server(latency) as server:
            for _, concurrency, n in group:
                r = run_cell(latency, concurrency, n, chats, server.base_url, server.cpu_seconds)
                rows.append(r)
                print(f"# L={latency} C={concurrency} N={n}: {r['wall']:.2f} s, load {r['load']}", file=sys.stderr)
    print(f"Machine: {describe_machine()}\n")
    table = []
    for r in rows:
        ideal = ideal_seconds(r["n"], r["concurrency"], r["latency"])
        table.append([
            f"{r['latency']:g}", r["concurrency"], r["n"], f"{r['graded']}/{r['n']}",
            f"{r['wall']:.2f}", f"{ideal:.1f}" if ideal else "—",
            f"{r['wall'] / ideal:.2f}" if ideal else "—", f"{r['n'] / r['wall']:.0f}",
            f"{1000 * r['cpu'] / r['n']:.2f}", f"{1000 * r['server_cpu'] / r['n']:.2f}",
            f"{r['peak_rss_mb']:.0f}", f"{r['cached_tokens'] / max(1, r['prompt_tokens']):.0%}", r["load"],
        ])
    print_table(["L (s)", "C", "N", "scored", "wall (s)", "ideal (s)", "wall/ideal", "transcripts/s",
                 "client CPU ms/transcript", "server CPU ms/request", "client peak RSS (MB)",
                 "shared prefix (cached/prompt tokens)", "load avg"], table)
    share = rows[0]["system_tokens_estimate"]
    print(f"\nSystem prompt: about {share:,} tokens by kefu-qa's estimate; the mock server counts 2 characters a "
          "token and reports the longest prefix it has seen before as cached_tokens.")


def sdk_share(n: int = 2000, concurrency: int = 64, rounds: int = 3) -> None:
    """L = 0 cells run alternately with the SDK (kefu-qa's path) and with a plain aiohttp POST instead:
    the difference is the SDK's own client CPU per transcript, everything else being the same."""
    chats = chats_file(n)
    rows = []
    with mock_server(0.0) as server:
        for round_ in range(1, rounds + 1):
            for transport in ("sdk", "aiohttp"):
                r = run_cell(0.0, concurrency, n, chats, server.base_url, server.cpu_seconds, transport)
                rows.append([round_, "openai SDK (kefu-qa)" if transport == "sdk" else "plain aiohttp (comparison)",
                             n, concurrency, f"{r['graded']}/{n}", f"{r['wall']:.2f}",
                             f"{1000 * r['cpu'] / n:.2f}", r["load"]])
    print(f"Machine: {describe_machine()}\n")
    print_table(["round", "request path", "N", "C", "scored", "wall (s)", "client CPU ms/transcript", "load avg"],
                rows)


# --- the CLI end to end ------------------------------------------------------------------------


@dataclass
class CliRun:
    """One `python -m pipeline grade` subprocess: its clock, its CPU (children included), the server's
    CPU over the same time, and the summary the run stored."""

    wall: float
    cpu: float
    server_cpu: float
    load: str
    summary: dict[str, Any]


def run_cli(chats: Path, server: ServerProcess, concurrency: int, limits: Path | None = None) -> CliRun:
    """Grade `chats` with the real CLI against `server` into a temporary run folder. `limits`: the file of
    learned rate limits it reads and writes (KEFU_LIMITS_FILE); by default a new one, so every run starts cold."""
    with tempfile.TemporaryDirectory(prefix="kefu-bench-cli-") as tmp:
        command = [sys.executable, "-m", "pipeline", "grade", str(chats), "--base-url", server.base_url,
                   "--model", MODEL, "--concurrency", str(concurrency), "--out", f"{tmp}/out"]
        env = command_env() | {"KEFU_LIMITS_FILE": str(limits or Path(tmp) / "rate_limits.json")}
        load = load_average()
        server_before = server.cpu_seconds()
        usage0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        usage1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        server_cpu = server.cpu_seconds() - server_before
        if proc.returncode != 0:
            raise SystemExit(f"kefu grade failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        summary = last_run_summary(Path(tmp) / "out")
    cpu = (usage1.ru_utime - usage0.ru_utime) + (usage1.ru_stime - usage0.ru_stime)
    return CliRun(wall, cpu, server_cpu, load, summary)


def cli_end_to_end(latency: float = 1.0, concurrency: int = 128, n: int = 1280) -> None:
    """Time `python -m pipeline grade` as a subprocess, process start and exports included."""
    chats = chats_file(n)
    compile_package()
    start = _time_command([sys.executable, "-m", "pipeline", "--help"])
    with mock_server(latency) as server:
        cli = run_cli(chats, server, concurrency)
    run = cli.summary
    ideal = ideal_seconds(n, concurrency, latency)
    print(f"Machine: {describe_machine()}\n")
    print(f"    {sys.executable} -m pipeline grade CHATS --base-url URL --model {MODEL} "
          f"--concurrency {concurrency} --out DIR\n")
    print_table(
        ["L (s)", "C", "N", "graded", "wall (s)", "ideal (s)", "wall/ideal", "within 10%",
         "runner elapsed (s)", "`pipeline --help` (s)", "CLI CPU (s)", "CPU ms/transcript", "server CPU (s)",
         "load at start"],
        [[f"{latency:g}", concurrency, n, run["graded"], f"{cli.wall:.2f}", f"{ideal:.1f}", f"{cli.wall / ideal:.2f}",
          "yes" if cli.wall <= 1.1 * ideal else "no", f"{run['elapsed_s']:.2f}", f"{start:.2f}", f"{cli.cpu:.1f}",
          f"{1000 * cli.cpu / n:.2f}", f"{cli.server_cpu:.1f}", cli.load]],
    )


def rate_limited(latency: float = 1.0, concurrency: int = 128, n: int = 1000, per_second: float = 50.0) -> None:
    """The CLI against a provider's token-bucket limit (a second's burst, then `per_second` requests, or that
    many requests' worth of tokens), once with OpenAI's `x-ratelimit-*` headers and Retry-After and once with
    neither: the limit, not the client, should set the pace, and no chat should end unscored. The limit's
    ideal is N/rate (total tokens/rate for tokens) plus one latency for the last wave. Each limit is met twice
    from a cold start, each time by a fresh server: by the CLI (`kefu grade`, process start, service checks and
    exports included) and by `run_grading` in a fresh process (the grid's library path), which a loaded machine
    slows less. Then twice from the rates the cold CLI run learned (rate_limits.json), as a rerun or the next
    day's run starts: the CLI again against the same server (same base URL, its bucket full again), and the
    library path against a fresh one with its pacer started at those rates."""
    chats = chats_file(n)
    compile_package()
    rows = []
    tokens_per_chat: float | None = None
    for kind in ("requests", "tokens"):
        for headers in (True, False):
            if kind == "requests":
                limit, option = f"{per_second:g} req/s", f"--request-bucket={per_second:g}/{per_second:g}"
            else:
                assert tokens_per_chat is not None
                rate = per_second * tokens_per_chat
                limit, option = f"{rate:,.0f} tok/s", f"--token-bucket={rate:.0f}/{rate:.0f}"
            options = [option, *(["--headers", "--retry-after"] if headers else [])]
            with tempfile.TemporaryDirectory(prefix="kefu-bench-limits-") as tmp:
                limits = Path(tmp) / "rate_limits.json"
                with mock_server(latency, options=options) as server:
                    cold = run_cli(chats, server, concurrency, limits)
                    # Nothing is kept when the run never found the bucket below full (a short run at a slow pace).
                    learned = json.loads(limits.read_text(encoding="utf-8"))["limits"] if limits.exists() else {}
                    warm = run_cli(chats, server, concurrency, limits)
            entry: dict[str, Any] = next(iter(learned.values()), {})
            start = tuple(entry.get(name) for name in (
                "requests_per_second", "tokens_per_second", "requests_burst", "tokens_burst"))
            with mock_server(latency, options=options) as server:
                library = run_cell(latency, concurrency, n, chats, server.base_url, server.cpu_seconds)
            with mock_server(latency, options=options) as server:
                library_warm = run_cell(latency, concurrency, n, chats, server.base_url, server.cpu_seconds,
                                        start=start)
            tokens = cold.summary["prompt_tokens"] + cold.summary["completion_tokens"]
            if tokens_per_chat is None:
                tokens_per_chat = tokens / max(1, cold.summary["graded"])
            ideal = (n / per_second if kind == "requests" else tokens / (per_second * tokens_per_chat)) + latency
            learned_at = ", ".join(f"{60 * r:,.0f}/min" for r in start[:2] if r is not None) or "nothing learned"
            for label, cli, lib in (("cold", cold, library), (f"learned ({learned_at})", warm, library_warm)):
                run = cli.summary
                rows.append([kind, limit, "yes" if headers else "no", label, f"{latency:g}", concurrency, n,
                             f"{run['graded']} / {lib['graded']}", f"{run['unscored']} / {lib['unscored']}",
                             f"{run.get('slow_down', 0)} / {lib['slow_down']}", f"{ideal:.1f}", f"{cli.wall:.2f}",
                             f"{cli.wall / ideal:.2f}", f"{lib['wall']:.2f}", f"{lib['wall'] / ideal:.2f}", cli.load])
    print(f"Machine: {describe_machine()}\n")
    print_table(["limit", "rate", "headers + Retry-After", "start", "L (s)", "C", "N", "graded (CLI / library)",
                 "unscored", "429s", "limit's ideal (s)", "CLI wall (s)", "CLI/ideal", "library wall (s)",
                 "library/ideal", "load at start"], rows)


def _time_command(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, cwd=REPO, capture_output=True, check=True, env=command_env())
    return time.perf_counter() - t0


# --- the breakdown -----------------------------------------------------------------------------


def breakdown(n: int = 1000) -> None:
    """CPU per transcript of each step of a grade, each timed over `n` transcripts in a loop (no network
    except the last row). In a real run the steps interleave, so caches are colder and the sum is lower
    than the end-to-end figure."""
    from pipeline.grading.grader import _criterion_grades, _validate
    from pipeline.grading.prompting import PromptSet, transcript_hash
    from pipeline.grading.schema import build_grade_schema
    from pipeline.inputs.tokens import estimate_tokens
    from pipeline.inputs.transcripts import read_transcripts
    from pipeline.llm.client import Endpoint, LLMClient
    from pipeline.models.grade import Grade, Sampling
    from pipeline.rubric.load import load_rubric
    from pipeline.store.rows import TranscriptMeta, grade_key
    from pipeline.store.store import Store
    from pipeline.testing.instances import generate_instance

    rubric = load_rubric(RUBRIC)
    prompts = PromptSet(rubric.language)
    criteria = rubric.criteria()
    schema = build_grade_schema(criteria)
    chats = chats_file(n)
    rows: list[list[object]] = []

    def step(label: str, fn: Callable[[int], object]) -> None:
        cpu0 = time.process_time()
        for i in range(n):
            fn(i)
        rows.append([label, f"{1000 * (time.process_time() - cpu0) / n:.3f}"])

    cpu0 = time.process_time()
    transcripts = [t for t in read_transcripts([chats]) if not hasattr(t, "reason")]
    read_ms = 1000 * (time.process_time() - cpu0) / n
    rows.append(["read and validate the JSONL line (pipeline.inputs.formats.jsonl)", f"{read_ms:.3f}"])
    step("transcript_hash", lambda i: transcript_hash(transcripts[i]))
    sampling = Sampling()
    step("grade_key", lambda i: grade_key(transcript_hash="0" * 64, rubric_hash="1" * 64, template_hash="2" * 64,
                                          model=MODEL, sampling=sampling, repeat=0, scope="all"))
    step("render the user message + estimate_tokens", lambda i: estimate_tokens(prompts.user(transcripts[i])))
    step("messages (system cached, user cached)", lambda i: prompts.messages(rubric, criteria, transcripts[i]))
    step("build_grade_schema (memoised)", lambda i: build_grade_schema(criteria))
    replies = [json.dumps(generate_instance(schema.json_schema, random.Random(i)), ensure_ascii=False)
               for i in range(n)]
    step("validate the reply (model_validate_json)", lambda i: _validate(schema, replies[i]))
    parsed = [_validate(schema, reply) for reply in replies]
    step("criterion grades + quote checks", lambda i: _criterion_grades(parsed[i], criteria, transcripts[i], []))
    criteria_grades = [_criterion_grades(parsed[i], criteria, transcripts[i], []) for i in range(n)]
    grades = [Grade(key=f"{i:064x}", transcript_id=transcripts[i].id, repeat=0, scope="all", status="scored",
                    criteria=criteria_grades[i], model=MODEL, attempts=1, created_at=datetime.now(UTC))
              for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="kefu-bench-") as tmp, Store.open(Path(tmp)) as store:
        run_id = store.start_run(rubric_id=rubric.id, rubric_version=rubric.version, rubric_hash="h",
                                 template_hash="t", model=MODEL, settings={})
        step("store.save_grade with the transcript's metadata (one commit)", lambda i: store.save_grade(
            grades[i], run_id, "h", meta=TranscriptMeta(transcripts[i], "h", None)))

    async def http(base_url: str, concurrency: int = 64) -> float:
        client = LLMClient(Endpoint(base_url, None))
        messages = [prompts.messages(rubric, criteria, t) for t in transcripts]
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                await client.chat(messages[i], model=MODEL, response_format=schema.response_format,
                                  temperature=0.0, seed=None, max_tokens=4096)

        await asyncio.gather(*(one(i) for i in range(64)))  # connections open before the clock
        cpu0 = self_cpu_seconds()
        await asyncio.gather(*(one(i) for i in range(n)))
        cpu = self_cpu_seconds() - cpu0
        await client.close()
        return cpu

    with mock_server(0.0) as server:
        cpu = asyncio.run(http(server.base_url))
    rows.append(["LLMClient.chat: encode, HTTP round trip, parse (C=64, L=0)", f"{1000 * cpu / n:.3f}"])
    total = sum(float(str(row[1])) for row in rows)
    rows.append(["**sum**", f"**{total:.3f}**"])
    print(f"Machine: {describe_machine()}\n")
    print_table(["step (per transcript)", "client CPU (ms)"], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cli", action="store_true", help="time the real CLI end to end (L=1, C=128, N=1280)")
    mode.add_argument("--breakdown", action="store_true", help="client CPU per step of a grade")
    mode.add_argument("--rate-limited", action="store_true",
                      help="the CLI against a 50-a-second token-bucket limit of requests, then of tokens, "
                           "with and without rate-limit headers and Retry-After")
    mode.add_argument("--sdk-share", action="store_true",
                      help="L=0 cells with the SDK and with a plain aiohttp POST, alternately")
    mode.add_argument("--cell", nargs=4, metavar=("CHATS", "N", "C", "URL"), help=argparse.SUPPRESS)
    parser.add_argument("--transport", choices=("sdk", "aiohttp"), default="sdk", help=argparse.SUPPRESS)
    parser.add_argument("--start", nargs="*", default=(), help=argparse.SUPPRESS)  # --cell: Limits to start at
    parser.add_argument("--latency", type=float, nargs="*", help="only these latencies of the grid")
    parser.add_argument("--n", type=int, default=1000, help="--rate-limited: chats (default 1000)")
    parser.add_argument("--rate", type=float, default=50.0, help="--rate-limited: requests a second (default 50)")
    args = parser.parse_args(argv)
    if args.cell:
        chats, n, concurrency, url = args.cell
        start = tuple(None if value == "-" else float(value) for value in args.start)
        print(json.dumps(asyncio.run(grade_cell(Path(chats), int(n), int(concurrency), url, args.transport, start))))
    elif args.cli:
        cli_end_to_end()
    elif args.breakdown:
        breakdown()
    elif args.rate_limited:
        rate_limited(n=args.n, per_second=args.rate)
    elif args.sdk_share:
        sdk_share()
    else:
        grid(cell for cell in GRID if args.latency is None or cell[0] in args.latency)


if __name__ == "__main__":
    main()
