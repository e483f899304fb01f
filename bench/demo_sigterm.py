"""SIGTERM on a real `kefu demo`: how long kefu and the embedded model's server take to go, and the exit code.

Starts `python -m pipeline demo --out OUT` (niced) with no endpoint configured, waits until its
llama-server child answers /health and then `--after` seconds more (a request in flight), sends
SIGTERM to kefu, and polls /proc every 20 ms until both are gone. Prints one table row. Needs the
`local` extra and the joined GGUF; takes a minute or more on two cores.

    python bench/demo_sigterm.py --out /tmp/sig [--after 5]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def server_child(parent: int) -> tuple[int, str] | None:
    """The llama-server process kefu started, and its port."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().split()[3])
            argv = Path(f"/proc/{entry}/cmdline").read_text().split("\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and "pipeline.llm.local.server" in argv:
            return int(entry), argv[argv.index("--port") + 1]
    return None


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def ready(port: str) -> bool:
    try:
        with _NO_PROXY.open(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a fresh run folder")
    parser.add_argument("--after", type=float, default=5.0, help="seconds after /health answers 200")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "KEFU_MODEL")}
    env["PYTHONPATH"] = str(ROOT)
    kefu = subprocess.Popen([sys.executable, "-m", "pipeline", "demo", "--out", str(args.out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=lambda: os.nice(10))
    server = None
    while kefu.poll() is None and server is None:
        found = server_child(kefu.pid)
        if found is not None and ready(found[1]):
            server = found[0]
        time.sleep(0.5)
    if server is None:
        sys.exit(f"kefu ended (code {kefu.returncode}) before its server was ready")
    time.sleep(args.after)
    load = os.getloadavg()[0]
    sent = time.monotonic()
    kefu.send_signal(signal.SIGTERM)
    server_gone = None
    while kefu.poll() is None or (server_gone is None and alive(server)):
        if server_gone is None and not alive(server):
            server_gone = time.monotonic() - sent
        time.sleep(0.02)
    kefu_gone = time.monotonic() - sent
    if server_gone is None and not alive(server):  # gone between two polls, just before kefu
        server_gone = kefu_gone
    stderr = kefu.stderr.read().decode("utf-8", errors="replace") if kefu.stderr else ""
    print("| load average (1 min) | kefu exited after | exit code | stop message | llama-server gone after | left |")
    print("| --- | --- | --- | --- | --- | --- |")
    print(f"| {load:.1f} | {kefu_gone:.1f} s | {kefu.returncode} | {'已停止' in stderr} | "
          f"{'—' if server_gone is None else f'{server_gone:.1f} s'} | {alive(server)} |")


if __name__ == "__main__":
    main()
