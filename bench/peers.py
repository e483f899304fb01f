"""The same grading work through kefu-qa, Inspect AI and DeepEval, against the same mock server.

    python -m bench.peers                       # N = 512, C = 64, L ∈ {0, 1}
    python -m bench.peers --n 256 --latency 1

Work: N generated chats (bench/chats.py), each rendered ONCE by kefu-qa's PromptSet into the same
system message (the 13-criterion rubric) and user message (the chat), and graded with one structured
call per transcript against the same JSON schema, at the same concurrency, on the same server process.

- kefu-qa: `run_grading` (read, render, call, validate, check quotes, commit to SQLite), in our venv.
- Inspect AI: a Task whose samples are the [system, user] messages, solver `generate()` with
  `GenerateConfig(response_schema=ResponseSchema(...))`, a custom scorer that parses the reply, run with
  `eval(model="openai-api/mock/mock-model", max_connections=C, max_samples=C)`; the server is named by
  MOCK_BASE_URL / MOCK_API_KEY, as Inspect documents for OpenAI-compatible services. Logs are kept.
- DeepEval: a custom `BaseMetric` that makes one structured call through a custom `DeepEvalBaseLLM`
  wrapping `AsyncOpenAI(base_url=...)` with `chat.completions.parse(response_format=<pydantic model>)`,
  as DeepEval's own GPTModel does; run with `evaluate(..., async_config=AsyncConfig(max_concurrent=C))`.

Each peer lives in its own venv under /tmp/kefu-bench-peers/, created here with `python -m venv` and
pip (the configured index) on first use. Each tool runs as a separate process; the table shows that
process's wall time and CPU (imports included) and the part after imports (the tool's own clock), and
the ratios to kefu-qa's measured in the same run. A peer that cannot be installed or run is reported
with the reason; no number is ever filled in for it.

This file is also the driver the peer venvs run (`--drive NAME`): at top level it imports only the
standard library and bench.harness, which does too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import REPO, describe_machine, load_average, mock_server, print_table, self_cpu_seconds

PEER_ROOT = Path("/tmp/kefu-bench-peers")
PEERS: dict[str, list[str]] = {"inspect": ["inspect-ai", "openai"], "deepeval": ["deepeval", "openai"]}
PEER_DISTRIBUTIONS = {"inspect": "inspect-ai", "deepeval": "deepeval"}
MODEL = "mock-model"
MAX_TOKENS = 4096


# --- set-up (our venv) -------------------------------------------------------------------------


def ensure_venv(name: str) -> tuple[Path | None, str]:
    """The peer's venv python, created and installed on first use; (None, why) if that fails."""
    root = PEER_ROOT / name
    python = root / "bin" / "python"
    probe = f"import importlib.metadata as m; print(m.version({PEER_DISTRIBUTIONS[name]!r}))"
    if python.exists():
        ok = subprocess.run([python, "-c", probe], capture_output=True, text=True)
        if ok.returncode == 0:
            return python, ok.stdout.strip()
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [[base, "-m", "venv", str(root)], [str(python), "-m", "pip", "install", "-q", *PEERS[name]]]
    for step in steps:
        print(f"# {' '.join(map(str, step))}", file=sys.stderr)
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"`{' '.join(map(str, step[-3:]))}` failed: {done.stderr.strip()[-300:]}"
    ok = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return (python, ok.stdout.strip()) if ok.returncode == 0 else (None, ok.stderr.strip()[-300:])


def prepare_work(n: int) -> tuple[Path, Path, Path]:
    """(chats JSONL, rendered messages JSONL, spec JSON): what every tool grades, rendered once by kefu-qa."""
    from bench.chats import chats_file
    from pipeline.grading.prompting import PromptSet
    from pipeline.grading.schema import build_grade_schema
    from pipeline.inputs.transcripts import read_transcripts
    from pipeline.models.transcript import Transcript
    from pipeline.rubric.load import load_rubric

    rubric = load_rubric(REPO / "rubric/ecommerce_cs.yaml")
    prompts = PromptSet(rubric.language)
    criteria = rubric.criteria()
    schema = build_grade_schema(criteria)
    chats = chats_file(n)
    work = PEER_ROOT / f"work-{n}.jsonl"
    spec = PEER_ROOT / "spec.json"
    PEER_ROOT.mkdir(parents=True, exist_ok=True)
    with work.open("w", encoding="utf-8") as out:
        for item in read_transcripts([chats]):
            if isinstance(item, Transcript):
                messages = prompts.messages(rubric, criteria, item)
                out.write(json.dumps({"id": item.id, "system": messages[0]["content"],
                                      "user": messages[1]["content"]}, ensure_ascii=False) + "\n")
    spec.write_text(json.dumps({
        "name": "grade", "schema": schema.json_schema, "max_total": rubric.total,
        "criteria": [{"id": c.id, "scores": schema.scores_allowed(c.id)} for c in criteria],
    }, ensure_ascii=False), encoding="utf-8")
    return chats, work, spec


def run_tool(python: Path | str, tool: str, args: list[str]) -> dict[str, Any]:
    """Run one tool's driver in its own process; its wall time and CPU are measured from outside."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(python), "-m", "bench.peers", "--drive", tool, *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    stdout, stderr = proc.communicate()  # reaps the child: its rusage is in RUSAGE_CHILDREN below
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"error": (stderr.strip() or stdout.strip())[-600:]}
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    result["process_wall"] = wall
    return result


def compare(n: int, concurrency: int, latencies: list[float]) -> None:
    """Run every tool at every latency and print the table."""
    chats, work, spec = prepare_work(n)
    pythons: dict[str, tuple[Path | str | None, str]] = {"kefu-qa": (sys.executable, _our_version())}
    for name in PEERS:
        pythons[name] = ensure_venv(name)
    rows, notes = [], []
    for latency in latencies:
        with mock_server(latency) as server:
            base: dict[str, Any] | None = None
            for tool, (python, version) in pythons.items():
                if python is None:
                    notes.append(f"{tool}: not run: {version}")
                    continue
                source = chats if tool == "kefu-qa" else work
                args = [str(source), str(spec), str(n), str(concurrency), server.base_url]
                cpu_before = _children_cpu()
                load = load_average()
                result = run_tool(python, tool, args)
                result["process_cpu"] = _children_cpu() - cpu_before
                print(f"# {tool} L={latency}: {json.dumps(result)[:300]}", file=sys.stderr)
                if "error" in result:
                    notes.append(f"{tool} at L={latency:g}: failed: {result['error']}")
                    continue
                if tool == "kefu-qa":
                    base = result
                rows.append(_row(tool, version, latency, concurrency, n, result, base, load))
    print(f"Machine: {describe_machine()}\n")
    print(f"Work: {n} chats, one structured call each (13 criteria, the same system and user text), "
          f"C = {concurrency}, one mock server process per latency.\n")
    print_table(["tool", "version", "L (s)", "C", "N", "scored", "process wall (s)", "process CPU (s)",
                 "run wall (s)", "run CPU (s)", "wall ÷ kefu-qa", "CPU ÷ kefu-qa", "run wall ÷", "run CPU ÷",
                 "load at start"], rows)
    for note in notes:
        print(f"\n- {note}")


def _row(tool: str, version: str, latency: float, concurrency: int, n: int, r: dict[str, Any],
         base: dict[str, Any] | None, load: str) -> list[object]:
    def ratio(key: str) -> str:
        return f"{r[key] / base[key]:.2f}" if base and base.get(key) else "—"

    return [tool, version, f"{latency:g}", concurrency, n, f"{r['scored']}/{n}", f"{r['process_wall']:.2f}",
            f"{r['process_cpu']:.2f}", f"{r['run_wall']:.2f}", f"{r['run_cpu']:.2f}", ratio("process_wall"),
            ratio("process_cpu"), ratio("run_wall"), ratio("run_cpu"), load]


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _our_version() -> str:
    from bench.harness import package_version

    return package_version("kefu-qa")


# --- drivers (each runs in its tool's venv) ------------------------------------------------------


def _load_work(path: str, n: int) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line, _ in zip(lines, range(n), strict=False)]


def _timed(run: Callable[[], int]) -> dict[str, Any]:
    cpu0, t0 = self_cpu_seconds(), time.perf_counter()
    scored = run()
    return {"scored": scored, "run_wall": time.perf_counter() - t0, "run_cpu": self_cpu_seconds() - cpu0}


def drive_kefu(chats: str, spec: str, n: int, concurrency: int, base_url: str) -> dict[str, Any]:
    """kefu-qa's own path, as in bench/throughput.py (the spec is implied by the rubric)."""
    from bench.throughput import grade_cell

    cell = asyncio.run(grade_cell(Path(chats), n, concurrency, base_url))
    return {"scored": cell["graded"], "run_wall": cell["wall"], "run_cpu": cell["cpu"]}


def drive_inspect(work_path: str, spec_path: str, n: int, concurrency: int, base_url: str) -> dict[str, Any]:
    """Inspect AI: Task + generate() with a response schema + a scorer that reads the reply."""
    os.environ["MOCK_BASE_URL"] = base_url
    os.environ["MOCK_API_KEY"] = "not-needed"
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageSystem, ChatMessageUser, GenerateConfig, ResponseSchema
    from inspect_ai.scorer import Score, Target, mean, scorer
    from inspect_ai.solver import TaskState, generate
    from inspect_ai.util import JSONSchema

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    ids = [c["id"] for c in spec["criteria"]]
    # Inspect's JSONSchema has no $defs/$ref: the same schema with its references written out.
    schema = JSONSchema.model_validate(_inline_refs(spec["schema"]))

    @scorer(metrics=[mean()])
    def rubric_total() -> Any:
        async def score(state: TaskState, target: Target) -> Score:
            reply = json.loads(state.output.completion)
            return Score(value=sum(reply[cid]["score"] for cid in ids) / spec["max_total"])

        return score

    def run() -> int:
        samples = [
            Sample(id=w["id"], input=[ChatMessageSystem(content=w["system"]), ChatMessageUser(content=w["user"])])
            for w in _load_work(work_path, n)
        ]
        task = Task(dataset=samples, solver=generate(), scorer=rubric_total(),
                    config=GenerateConfig(temperature=0.0, max_tokens=MAX_TOKENS,
                                          response_schema=ResponseSchema(name=spec["name"], json_schema=schema,
                                                                         strict=True)))
        with tempfile.TemporaryDirectory(prefix="kefu-bench-inspect-") as logs:
            (log,) = inspect_eval(task, model=f"openai-api/mock/{MODEL}", max_connections=concurrency,
                                  max_samples=concurrency, log_dir=logs, display="none")
            if log.status != "success":
                raise RuntimeError(f"inspect eval ended {log.status}: {log.error}")
            return sum(1 for s in (log.samples or []) if s.scores and not s.error)

    return _timed(run)


def drive_deepeval(work_path: str, spec_path: str, n: int, concurrency: int, base_url: str) -> dict[str, Any]:
    """DeepEval: a custom metric making one structured call through a custom model class."""
    os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "1")
    os.environ.setdefault("DEEPEVAL_NO_INSPECT_PROMPT", "1")
    os.environ.setdefault("DEEPEVAL_RESULTS_FOLDER", tempfile.mkdtemp(prefix="kefu-bench-deepeval-"))
    from typing import Literal

    from deepeval import evaluate
    from deepeval.evaluate import AsyncConfig, CacheConfig, DisplayConfig
    from deepeval.metrics import BaseMetric
    from deepeval.models import DeepEvalBaseLLM
    from deepeval.test_case import LLMTestCase
    from openai import AsyncOpenAI
    from pydantic import BaseModel, Field, create_model

    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))

    class Evidence(BaseModel):
        turn: int
        quote: str

    fields: dict[str, Any] = {
        c["id"]: (create_model(f"Reply_{c['id']}", evidence=(list[Evidence], Field(max_length=3)),
                               reasoning=(str, ...), score=(Literal[tuple(c["scores"])], ...)), ...)
        for c in spec["criteria"]
    }
    reply_model = create_model("GradeReply", **fields)

    class MockJudge(DeepEvalBaseLLM):
        def __init__(self) -> None:
            self.client = AsyncOpenAI(base_url=base_url, api_key="not-needed", max_retries=0)
            super().__init__(MODEL)

        def load_model(self) -> Any:
            return self.client

        def generate(self, prompt: str, schema: Any = None) -> Any:
            raise NotImplementedError("this benchmark runs async only")

        async def a_generate(self, prompt: str, schema: Any = None) -> Any:
            completion = await self.client.chat.completions.parse(
                model=MODEL, messages=[{"role": "user", "content": prompt}], response_format=schema,
                temperature=0.0, max_tokens=MAX_TOKENS)
            return completion.choices[0].message.parsed

        def get_model_name(self) -> str:
            return MODEL

    class RubricMetric(BaseMetric):
        # DeepEval copies a metric per test case by calling __init__ with the attributes of the same names.
        def __init__(self, model: MockJudge, system: str) -> None:
            self.model = model
            self.system = system
            self.threshold = 0.5
            self.async_mode = True
            self.include_reason = False

        def measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
            return asyncio.run(self.a_measure(test_case))

        async def a_measure(self, test_case: LLMTestCase, *args: Any, **kwargs: Any) -> float:
            reply = await self.model.a_generate(f"{self.system}\n\n{test_case.input}", schema=reply_model)
            total = sum(getattr(reply, c["id"]).score for c in spec["criteria"])
            self.score = total / spec["max_total"]
            self.success = self.score >= self.threshold
            return self.score

        def is_successful(self) -> bool:
            return bool(self.success)

        @property
        def __name__(self) -> str:  # type: ignore[override]  # DeepEval names metrics by this property
            return "KefuRubric"

    def run() -> int:
        work = _load_work(work_path, n)
        cases = [LLMTestCase(input=w["user"], actual_output="", name=w["id"]) for w in work]
        result = evaluate(cases, metrics=[RubricMetric(MockJudge(), work[0]["system"])],
                          async_config=AsyncConfig(max_concurrent=concurrency),
                          display_config=DisplayConfig(show_indicator=False, print_results=False,
                                                       inspect_after_run=False),
                          cache_config=CacheConfig(write_cache=False))
        return sum(1 for t in result.test_results for m in (t.metrics_data or [])
                   if m.score is not None and not m.error)

    return _timed(run)


def _inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[1]])
            return {k: resolve(v) for k, v in node.items() if k != "$defs"}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


DRIVERS = {"kefu-qa": drive_kefu, "inspect": drive_inspect, "deepeval": drive_deepeval}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--drive", nargs=6, metavar=("TOOL", "WORK", "SPEC", "N", "C", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drive:
        tool, work, spec, n, concurrency, url = args.drive
        print(json.dumps(DRIVERS[tool](work, spec, int(n), int(concurrency), url)))
    else:
        compare(args.n, args.concurrency, args.latency)


if __name__ == "__main__":
    main()
