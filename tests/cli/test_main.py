"""How the `kefu` process ends: with the command's exit code and its output, atexit handlers run, and the
interpreter's teardown skipped unless a thread is still running (pipeline/cli/main.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Run `kefu ARGS` (argv[2:]) with markers in folder argv[1]: "atexit" from an atexit handler, "teardown" from the
# __del__ of an object only the interpreter's teardown frees, and, when argv[2] is "--thread", "thread" from a
# non-daemon thread that runs until the main thread has ended.
RUN_WITH_MARKERS = """
import atexit, runpy, sys, threading
from pathlib import Path
folder, args = Path(sys.argv[1]), sys.argv[2:]
atexit.register(lambda: (folder / "atexit").write_text("ran"))
class Marker:
    def __init__(self, path):
        self.path = path
    def __del__(self):
        open(self.path, "w").write("ran")
sys.modules["__marker__"] = type(sys)("__marker__")
sys.modules["__marker__"].kept = Marker(str(folder / "teardown"))
if args[:1] == ["--thread"]:
    args = args[1:]
    main = threading.main_thread()  # joined once the interpreter starts its ordinary exit
    threading.Thread(target=lambda: (main.join(), (folder / "thread").write_text("ran"))).start()
sys.argv = ["kefu", *args]
runpy.run_module("pipeline", run_name="__main__", alter_sys=True)
"""


def kefu(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_"))}
    return subprocess.run([sys.executable, "-c", RUN_WITH_MARKERS, str(tmp_path), *args], cwd=REPO, text=True,
                          capture_output=True, timeout=300, env=env)


def markers(folder: Path) -> set[str]:
    return {name for name in ("atexit", "teardown", "thread") if (folder / name).exists()}


def test_a_command_ends_with_its_output_and_atexit_handlers_but_no_teardown(tmp_path: Path) -> None:
    proc = kefu(tmp_path, "rubric", "check", "rubric/ecommerce_cs.yaml")

    assert proc.returncode == 0, proc.stderr
    assert "ecommerce_cs.yaml" in proc.stdout  # flushed into the pipe before the process ended
    assert markers(tmp_path) == {"atexit"}


@pytest.mark.parametrize(("args", "code", "message"), [
    (("rubric", "check", "pyproject.toml"), 1, "not valid YAML"),  # the command's own exit code
    (("grade", "eval_sets/ecommerce_cs.jsonl", "--temperature", "3"), 2, "--temperature"),  # bad settings
])
def test_the_exit_code_and_message_of_a_failed_command_are_kept(tmp_path: Path, args: tuple[str, ...], code: int,
                                                                 message: str) -> None:
    proc = kefu(tmp_path, *args, *(["--out", str(tmp_path / "out")] if args[0] == "grade" else []))

    assert proc.returncode == code
    assert message in proc.stderr
    assert markers(tmp_path) == {"atexit"}


def test_a_thread_still_running_makes_the_ordinary_exit_that_waits_for_it(tmp_path: Path) -> None:
    proc = kefu(tmp_path, "--thread", "rubric", "check", "rubric/ecommerce_cs.yaml")

    assert proc.returncode == 0, proc.stderr
    assert markers(tmp_path) == {"atexit", "teardown", "thread"}
