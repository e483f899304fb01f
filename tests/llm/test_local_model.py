"""The embedded model without the model: joining fake parts, and the lifecycle of a fake llama-server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import pipeline.llm.local.model as local_model
from pipeline.errors import ConfigError, LocalExtraMissingError, LocalServerError, ModelFileError
from pipeline.llm.local.model import (
    LocalServer,
    context_size_for,
    free_port,
    local_extra_available,
    model_identity,
    model_parts,
    prepare_model,
    server_runtime,
)

PART_BYTES = [b"GGUF-head", b"middle" * 1000, b"tail"]
JOINED = b"".join(PART_BYTES)
JOINED_SHA256 = hashlib.sha256(JOINED).hexdigest()


@pytest.fixture
def parts(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "parts"
    directory.mkdir()
    paths = []
    for i, data in enumerate(PART_BYTES, start=1):
        path = directory / f"part{i:02d}.bin"
        path.write_bytes(data)
        paths.append(path)
    return paths


def prepare(cache: Path, parts: list[Path], **kwargs: Any) -> Path:
    options: dict[str, Any] = {"parts": parts, "expected_sha256": JOINED_SHA256, "expected_size": len(JOINED)}
    return prepare_model(cache, **(options | kwargs))


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


# --- joining and verifying ---


def test_prepare_model_joins_parts_in_order_and_writes_marker(tmp_path: Path, parts: list[Path]) -> None:
    progress: list[int] = []
    path = prepare(tmp_path / "models", parts, on_progress=progress.append)

    assert path == tmp_path / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    assert path.read_bytes() == JOINED
    assert (tmp_path / "models" / (path.name + ".sha256")).read_text(encoding="utf-8") == (
        f"{JOINED_SHA256}  {path.name}\n"
    )
    assert files_in(tmp_path / "models") == {path.name, path.name + ".sha256"}  # no temp file left
    # Parts are smaller than a chunk, so progress is reported once per part, as cumulative bytes.
    assert progress == [9, 9 + 6000, 9 + 6000 + 4]


def test_default_cache_dir_follows_kefu_cache_dir(
    tmp_path: Path, parts: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEFU_CACHE_DIR", str(tmp_path / "kefu"))
    path = prepare_model(parts=parts, expected_sha256=JOINED_SHA256, expected_size=len(JOINED))
    assert path == tmp_path / "kefu" / "models" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"


def test_wrong_sha256_raises_and_leaves_no_file(tmp_path: Path, parts: list[Path]) -> None:
    cache = tmp_path / "models"
    with pytest.raises(ModelFileError) as caught:
        prepare(cache, parts, expected_sha256="0" * 64)

    assert caught.value.expected == "0" * 64
    assert caught.value.got == JOINED_SHA256
    assert "0" * 64 in str(caught.value) and JOINED_SHA256 in str(caught.value)
    assert files_in(cache) == set()


def test_wrong_total_size_fails_before_writing(tmp_path: Path, parts: list[Path]) -> None:
    cache = tmp_path / "models"
    with pytest.raises(ModelFileError) as caught:
        prepare(cache, parts, expected_size=len(JOINED) + 1)
    assert caught.value.expected == f"{len(JOINED) + 1} bytes"
    assert caught.value.got == f"{len(JOINED)} bytes"
    assert files_in(cache) == set()


def test_missing_part_is_named(tmp_path: Path, parts: list[Path]) -> None:
    parts[1].unlink()
    with pytest.raises(ModelFileError, match=r"part02\.bin"):
        prepare(tmp_path / "models", parts)


def test_keyboard_interrupt_mid_join_leaves_no_partial_file(tmp_path: Path, parts: list[Path]) -> None:
    def interrupt_after_first_part(written: int) -> None:
        if written > len(PART_BYTES[0]):
            raise KeyboardInterrupt

    cache = tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        prepare(cache, parts, on_progress=interrupt_after_first_part)
    assert files_in(cache) == set()


def test_second_call_trusts_the_marker_and_does_not_rejoin(tmp_path: Path, parts: list[Path]) -> None:
    path = prepare(tmp_path / "models", parts)
    mtime = path.stat().st_mtime_ns
    for part in parts:  # a re-join would now fail
        part.unlink()

    assert prepare(tmp_path / "models", parts) == path
    assert path.stat().st_mtime_ns == mtime


def test_missing_marker_means_rehash_not_rejoin(tmp_path: Path, parts: list[Path]) -> None:
    path = prepare(tmp_path / "models", parts)
    marker = path.with_name(path.name + ".sha256")
    marker.unlink()
    for part in parts:
        part.unlink()

    assert prepare(tmp_path / "models", parts) == path
    assert marker.read_text(encoding="utf-8").split()[0] == JOINED_SHA256


def test_file_changed_after_marker_is_rehashed_and_rejoined(tmp_path: Path, parts: list[Path]) -> None:
    path = prepare(tmp_path / "models", parts)
    path.write_bytes(b"x" * len(JOINED))  # same size, wrong content
    marker_mtime = path.with_name(path.name + ".sha256").stat().st_mtime_ns
    newer = marker_mtime + 10**9  # newer than the marker whatever the file system's clock granularity
    os.utime(path, ns=(newer, newer))

    assert prepare(tmp_path / "models", parts).read_bytes() == JOINED


def test_model_identity_uses_marker_or_hashes_the_file(tmp_path: Path, parts: list[Path]) -> None:
    path = prepare(tmp_path / "models", parts)
    assert model_identity(path) == f"qwen2.5-coder-1.5b-instruct-q4_k_m@{JOINED_SHA256[:8]}"

    other = tmp_path / "other.gguf"
    other.write_bytes(b"hello")
    # sha256("hello") = 2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824
    assert model_identity(other) == "other@2cf24dba"


# --- sizing, ports, the extra ---


@pytest.mark.parametrize(
    ("prompt", "completion", "expected"),
    [
        (0, 0, 4096),  # the floor
        (3000, 1096, 4096),  # exactly the floor
        (4000, 97, 4608),  # 4097 rounds up to 9 * 512
        (5000, 120, 5120),  # 5120 = 10 * 512 stays
    ],
)
def test_context_size_for(prompt: int, completion: int, expected: int) -> None:
    assert context_size_for(prompt, completion) == expected


def test_context_size_rejects_negative_counts() -> None:
    with pytest.raises(ValueError):
        context_size_for(-1, 100)


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))


def test_model_parts_without_the_extra_names_both_ways_forward() -> None:
    with pytest.raises(LocalExtraMissingError) as caught:
        model_parts(("kefu_no_such_part_1", "kefu_no_such_part_2"))

    assert isinstance(caught.value, ConfigError)
    assert caught.value.missing == ["kefu_no_such_part_1", "kefu_no_such_part_2"]
    message = str(caught.value)
    assert "pip install 'kefu-qa[local]'" in message
    assert "OPENAI_BASE_URL" in message and "--base-url" in message


def test_server_runtime_without_the_extra() -> None:
    with pytest.raises(LocalExtraMissingError, match="kefu_no_such_runtime"):
        server_runtime("kefu_no_such_runtime")


def test_model_parts_calls_get_part_path_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in (1, 2):
        package = tmp_path / f"kefu_fake_part{i}"
        package.mkdir()
        (package / "__init__.py").write_text(
            f"def get_part_path():\n    return '/models/part{i:02d}.bin'\n", encoding="utf-8"
        )
    monkeypatch.syspath_prepend(str(tmp_path))

    assert model_parts(("kefu_fake_part2", "kefu_fake_part1")) == [
        Path("/models/part02.bin"),
        Path("/models/part01.bin"),
    ]


def test_local_extra_available() -> None:
    assert local_extra_available(("json", "socket"))
    assert not local_extra_available(("json", "kefu_no_such_part_1"))


# --- the server lifecycle, against a fake llama-server ---

FAKE_SERVER = """#!{python}
import argparse, http.server, json, os, signal, sys, time

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int)
args, _ = parser.parse_known_args()
with open(os.environ["FAKE_RECORD"], "a") as record:
    record.write(json.dumps({{"pid": os.getpid(), "argv": sys.argv[1:]}}) + "\\n")
if os.environ.get("FAKE_IGNORE_TERM"):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("fake llama-server: loading model", file=sys.stderr, flush=True)
if os.environ.get("FAKE_CRASH"):
    print("fake llama-server: failed to load model", file=sys.stderr, flush=True)
    sys.exit(3)
if os.environ.get("FAKE_SIGILL"):  # as a CPU backend built for AVX-512 does on an AVX2-only machine
    os.kill(os.getpid(), signal.SIGILL)
ready_at = time.monotonic() + float(os.environ.get("FAKE_DELAY", "0"))


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ready = time.monotonic() >= ready_at
        self.send_response(200 if ready and self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args):
        pass


try:
    server = http.server.HTTPServer(("127.0.0.1", args.port), Health)
except OSError:
    print(f"couldn't bind HTTP server socket, hostname: 127.0.0.1, port: {{args.port}}", file=sys.stderr)
    sys.exit(1)
server.serve_forever()
"""


class Fake:
    """A fake llama-server executable and what it recorded about its launches."""

    def __init__(self, tmp_path: Path) -> None:
        self.binary = tmp_path / "llama-server"
        self.binary.write_text(FAKE_SERVER.format(python=sys.executable), encoding="utf-8")
        self.binary.chmod(0o755)
        self.record = tmp_path / "launches.jsonl"
        self.model = tmp_path / "model.gguf"
        self.model.write_bytes(b"GGUF")
        self.log = tmp_path / "logs" / "llama-server.log"

    def server(self, env: dict[str, str] | None = None, **options: Any) -> LocalServer:
        """A LocalServer on the fake; `env` steers the fake's behaviour (FAKE_DELAY, FAKE_CRASH, ...)."""
        settings: dict[str, Any] = {
            "context_size": 4096,
            "alias": "fake-model@00000000",
            "threads": 2,
            "binary": self.binary,
            "env": {**os.environ, "FAKE_RECORD": str(self.record), **(env or {})},
            "extra_args": ["--verbose-prompt"],
            "log_path": self.log,
            "health_timeout": 30.0,
            "stop_grace": 5.0,
        }
        return LocalServer(self.model, **(settings | options))

    def launches(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.record.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


def assert_gone(pid: int) -> None:
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def health_status(server: LocalServer) -> int:
    url = server.base_url.removesuffix("/v1") + "/health"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=5) as response:
        status: int = response.status
        return status


def test_server_starts_with_the_expected_flags_and_stops(fake: Fake) -> None:
    with fake.server({"FAKE_DELAY": "0.5"}) as server:  # answers 503 first, as while loading
        assert server.process is not None
        pid = server.process.pid
        assert health_status(server) == 200
        assert server.model == "fake-model@00000000"
        port = server.port
        assert server.base_url == f"http://127.0.0.1:{port}/v1"

    assert_gone(pid)
    assert server.process is None
    (launch,) = fake.launches()
    assert launch["pid"] == pid
    assert launch["argv"] == [
        "-m", str(fake.model),
        "--host", "127.0.0.1",
        "--port", str(port),
        "-t", "2",
        "-tb", "2",
        "-c", "4096",
        "-np", "1",
        "--cache-prompt",
        "--cache-reuse", "256",
        "--jinja",
        "--alias", "fake-model@00000000",
        "--no-webui",
        "--offline",
        "--verbose-prompt",
    ]  # fmt: skip
    assert "fake llama-server: loading model" in fake.log.read_text(encoding="utf-8")


@pytest.mark.parametrize("error", [RuntimeError("grading failed"), KeyboardInterrupt()])
def test_server_is_stopped_when_the_body_raises(fake: Fake, error: BaseException) -> None:
    with pytest.raises(type(error)), fake.server() as server:
        assert server.process is not None
        raise error
    assert_gone(fake.launches()[0]["pid"])


def test_health_timeout_gives_the_log_tail_and_stops_the_server(fake: Fake) -> None:
    server = fake.server({"FAKE_DELAY": "inf"}, health_timeout=2)
    with pytest.raises(LocalServerError) as caught:
        server.start()

    assert "did not become ready within 2 s" in str(caught.value)
    assert "fake llama-server: loading model" in caught.value.log_tail
    assert caught.value.log_path == str(fake.log)
    assert caught.value.returncode is None
    assert_gone(fake.launches()[0]["pid"])


def test_crash_before_ready_is_reported_without_retry(fake: Fake) -> None:
    with pytest.raises(LocalServerError) as caught:
        fake.server({"FAKE_CRASH": "1"}).start()

    assert caught.value.returncode == 3
    assert "failed to load model" in caught.value.log_tail
    assert len(fake.launches()) == 1


def test_illegal_instruction_is_explained(fake: Fake) -> None:
    with pytest.raises(LocalServerError, match="illegal CPU instruction") as caught:
        fake.server({"FAKE_SIGILL": "1"}).start()
    assert caught.value.returncode == -signal.SIGILL


def test_port_lost_to_a_race_is_retried_on_another(fake: Fake) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports: Iterator[int] = iter([taken_port, free_port()])
        with fake.server(pick_port=lambda: next(ports)) as server:
            port = server.port
            assert port != taken_port
            assert health_status(server) == 200

    first, second = fake.launches()
    assert first["argv"][first["argv"].index("--port") + 1] == str(taken_port)
    assert second["argv"][second["argv"].index("--port") + 1] == str(port)
    assert "couldn't bind HTTP server socket" in fake.log.read_text(encoding="utf-8")


def test_keyboard_interrupt_while_waiting_for_health_stops_the_server(
    fake: Fake, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupt_once_launched(url: str) -> bool:
        if fake.record.exists():  # the fake has started and recorded its pid
            raise KeyboardInterrupt
        return False

    monkeypatch.setattr(local_model, "_health_ok", interrupt_once_launched)
    with pytest.raises(KeyboardInterrupt):
        fake.server({"FAKE_DELAY": "inf"}).start()
    assert_gone(fake.launches()[0]["pid"])


def test_server_ignoring_sigterm_is_killed_after_the_grace_period(fake: Fake) -> None:
    with fake.server({"FAKE_IGNORE_TERM": "1"}, stop_grace=0.3) as server:
        assert server.process is not None
        process = server.process

    assert process.returncode == -signal.SIGKILL
    assert_gone(process.pid)


@pytest.mark.skipif(sys.platform != "linux", reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_with_a_parent_killed_by_sigkill(fake: Fake, tmp_path: Path) -> None:
    # A parent killed with -9 runs no `finally`; the kernel must take the model server down with it.
    parent = tmp_path / "parent.py"
    parent.write_text(
        "import sys, time\n"
        "from pathlib import Path\n"
        "from pipeline.llm.local.model import LocalServer\n"
        f"server = LocalServer(Path({str(fake.model)!r}), context_size=4096, alias='fake', threads=1,\n"
        f"                     binary=Path({str(fake.binary)!r}), log_path=Path({str(fake.log)!r}))\n"
        "server.start()\n"
        "print(server.process.pid, flush=True)\n"
        "time.sleep(600)\n",
        encoding="utf-8",
    )
    env = {**os.environ, "FAKE_RECORD": str(fake.record)}
    proc = subprocess.Popen([sys.executable, str(parent)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    os.kill(child, 0)  # the server is up
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running(child)


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie lingers until whoever adopted it reaps it)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_the_thread_count_is_every_usable_core_whatever_the_load(fake: Fake, monkeypatch: pytest.MonkeyPatch) -> None:
    # A count that followed the load changed llama.cpp's sums, and so the greedy tokens, from run to run.
    monkeypatch.setattr(local_model, "usable_cpus", lambda: 3)
    server = fake.server(threads=None)
    assert server.threads == 3
    argv = server._command(("llama-server",), 8080)
    assert argv[argv.index("-t") + 1] == argv[argv.index("-tb") + 1] == "3"


def test_serve_starts_the_server_once_and_gives_its_url(fake: Fake) -> None:
    server = fake.server()
    try:
        assert not fake.record.exists()  # made, not started: a run with nothing to send never starts it
        url = server.serve()
        assert url == server.base_url and server.serve() == url
        assert len(fake.launches()) == 1 and health_status(server) == 200
    finally:
        server.stop()
    assert_gone(fake.launches()[0]["pid"])
