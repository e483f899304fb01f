"""The benchmark harness: the mock server in a process of its own, CPU and memory readings, the machine.

The server runs as `python -m bench.server` in a child process, so its CPU is never counted as the
client's (resource.getrusage(RUSAGE_SELF) of the client excludes it). On a 2-core machine the two
processes still compete for cores with everything else running, so every table records the load.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def command_env() -> dict[str, str]:
    """The environment for a timed `python -m pipeline` run: no OPENAI_* settings from the caller, and
    bytecode caching on as on a user's machine (a sandbox may set PYTHONDONTWRITEBYTECODE, which makes
    every start-up compile ~25 modules again: 0.15-0.2 s measured)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_") and k != "PYTHONDONTWRITEBYTECODE"}


def compile_package() -> None:
    """Fill the project's bytecode cache, as the first run on a user's machine does, before timing."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "pipeline")], check=True,
                   env=command_env())


@dataclass
class ServerProcess:
    """A running `bench.server`: its base URL and process id."""

    base_url: str
    pid: int

    def cpu_seconds(self) -> float:
        """CPU the server process has used so far (user + system)."""
        return process_cpu_seconds(self.pid)


@contextlib.contextmanager
def mock_server(latency: float, *, python: str = sys.executable,
                options: Sequence[str] = ()) -> Iterator[ServerProcess]:
    """Start the mock server on a loopback port with a fixed latency and `bench.server` options; stop it on exit."""
    proc = subprocess.Popen(
        [python, "-m", "bench.server", "--latency", str(latency), *options],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"bench.server did not start (said {url!r})")
        yield ServerProcess(url, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)  # bench.server stops cleanly on Ctrl-C
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def self_cpu_seconds() -> float:
    """CPU this process has used (user + system), server excluded."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def self_peak_rss_mb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_seconds(pid: int) -> float:
    """CPU (user + system) of a running process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def process_rss_mb(pid: int) -> tuple[float, float]:
    """(current, peak) resident memory of a running process, from /proc (VmRSS, VmHWM)."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def last_run_summary(out_dir: Path) -> dict[str, Any]:
    """The summary the runner stored for the most recent run of a `kefu grade` run folder."""
    from pipeline.store.store import Store

    with Store.open(out_dir) as store:
        run = store.last_run()
    assert run is not None and run["summary"], "the CLI recorded no run"
    summary: dict[str, Any] = json.loads(run["summary"])
    return summary


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def package_version(name: str) -> str:
    """An installed distribution's version, or 'not installed'."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(packages: Sequence[str] = ("openai", "httpx2", "aiohttp", "pydantic", "jinja2")) -> str:
    """One paragraph: cores, memory, Python, package versions and the load average right now."""
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    versions = ", ".join(f"{name} {package_version(name)}" for name in packages)
    return (f"{os.cpu_count()} cores, {mem_kb / 1024 / 1024:.1f} GiB RAM, Python {platform.python_version()} "
            f"({platform.machine()}); {versions}; load average {load_average()}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A Markdown table on stdout, ready to paste into bench/README.md."""
    print("| " + " | ".join(headers) + " |")
    print("|" + "|".join(" ---: " if i else " --- " for i in range(len(headers))) + "|")
    for row in rows:
        print("| " + " | ".join(str(cell) for cell in row) + " |")
    sys.stdout.flush()
