"""Progress for people: a time left from the first grades on, and plain lines when stderr is not a terminal."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console
from rich.progress import Progress, TimeRemainingColumn
from test_cli import RUN_AS_FROM_A_TERMINAL, make_chats, write_jsonl

from pipeline.cli.progress_lines import PlainProgress, TimeLeftColumn, clock_text, time_left
from pipeline.models.grade import Grade
from pipeline.testing.mockserver import MockServer

REPO = Path(__file__).resolve().parents[2]
GRADE = Grade(key="k", transcript_id="demo-[b]024", repeat=0, scope="all", status="scored", criteria=[], model="m",
              attempts=1, completion_tokens=150, created_at=datetime(2026, 12, 7, tzinfo=UTC))


def test_time_left_shows_after_the_first_grade_of_a_slow_run() -> None:
    # One grade a minute (the embedded model on a CPU): rich's own column, averaging the last 30 s, never knows.
    now = [0.0]
    progress = Progress(get_time=lambda: now[0], console=Console(file=io.StringIO()))
    task_id = progress.add_task("grading", total=10, since=0.0)
    task = progress.tasks[0]
    assert TimeLeftColumn().render(task).plain == "-:--:--"
    for _ in range(2):
        now[0] += 60.0
        progress.update(task_id, advance=1)
    assert TimeLeftColumn().render(task).plain == "0:08:00"  # 8 left at 60 s each
    assert TimeRemainingColumn().render(task).plain == "-:--:--"  # what the bar showed before


def test_plain_lines_at_every_interval_and_every_five_percent() -> None:
    now = [100.0]
    buffer = io.StringIO()
    sink = PlainProgress(Console(file=buffer, width=200), every=10.0, clock=lambda: now[0])
    sink.start(200)
    for _ in range(9):  # 4.5%, 1 s apart: no step reached, no interval passed
        now[0] += 1.0
        sink.advance(GRADE)
    assert buffer.getvalue() == ""
    now[0] += 1.0
    sink.advance(GRADE)  # 5%
    now[0] += 11.0
    sink.advance(GRADE)  # the interval
    lines = buffer.getvalue().splitlines()
    # 10 s for 10: 190 left at 1 s = 3:10; then 21 s for 11: 189 × 21/11 = 360.8 s = 6:00.
    # The chat id is data: rich markup in it is shown as written, not applied.
    assert lines == ["评分进度 (grading) 10/200 (5%) · 1.00/s · 剩余约 (left) 0:03:10 · "
                     "刚评完 (done) demo-[b]024 · 已生成 (generated) 1,500 tokens",
                     "评分进度 (grading) 11/200 (6%) · 0.52/s · 剩余约 (left) 0:06:00 · "
                     "刚评完 (done) demo-[b]024 · 已生成 (generated) 1,650 tokens"]


@given(st.just(0.0) | st.floats(min_value=1e-3, max_value=1e7), st.integers(min_value=0, max_value=10**6),
       st.integers(min_value=0, max_value=10**6))
def test_time_left_is_unknown_before_a_grade_and_never_negative(elapsed: float, done: int, total: int) -> None:
    left = time_left(elapsed, done, total)
    assert (left is None) == (done == 0 or elapsed == 0)
    assert left is None or (left >= 0 and (left == 0) == (done >= total))
    assert clock_text(left).count(":") == 2


def test_a_run_into_a_pipe_prints_progress_lines(tmp_path: Path) -> None:
    src = tmp_path / "chats.jsonl"
    write_jsonl(src, make_chats(12))
    with MockServer(latency=0.15) as server:
        env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "KEFU_"))}
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "KEFU_PROGRESS_EVERY": "0.01"}
        proc = subprocess.run([sys.executable, "-c", RUN_AS_FROM_A_TERMINAL, "grade", str(src), "--out",
                               str(tmp_path / "o"), "--concurrency", "1", "--model", "mock-model"],
                              env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("评分进度 (grading)")]
    assert len(lines) == 12 and lines[-1].startswith("评分进度 (grading) 12/12 (100%)")
    assert "剩余约 (left) 0:00:00" in lines[-1] and all("-:--:--" not in line for line in lines)
