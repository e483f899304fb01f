"""The progress bar the runner drives: skipped calls leave its total, so rate and ETA are of real work."""

from __future__ import annotations

import io
from datetime import UTC, datetime

from rich.console import Console
from rich.progress import Progress

from pipeline.cli.console import RichProgress, rate_limit_note
from pipeline.grading.runner import RunSummary
from pipeline.models.grade import Grade

GRADE = Grade(key="k", transcript_id="demo-024", repeat=0, scope="all", status="scored", criteria=[], model="m",
              attempts=1, completion_tokens=150, created_at=datetime(2026, 12, 7, tzinfo=UTC))


def test_skipped_calls_leave_the_total_and_the_last_skips_are_shown() -> None:
    now = [100.0]
    progress = Progress(console=Console(file=io.StringIO()), auto_refresh=False)
    sink = RichProgress(progress, clock=lambda: now[0])
    (task,) = progress.tasks
    sink.start(10)
    sink.skip(3)  # shown at once (the first update)
    assert task.total == 7
    now[0] += 0.05
    sink.skip(2)  # within 0.1 s of the last update: not shown yet...
    assert task.total == 7
    sink.show_total()  # ...until the end of the run (grading_progress calls this on exit)
    assert task.total == 5 and task.completed == 0
    sink.skip(1)
    sink.advance(GRADE)  # a grade carries the current total with it
    assert (task.total, task.completed) == (4, 1)


def test_skips_without_a_known_total_change_nothing() -> None:
    progress = Progress(console=Console(file=io.StringIO()), auto_refresh=False)
    sink = RichProgress(progress)
    sink.start(None)
    sink.skip(5)
    sink.show_total()
    assert progress.tasks[0].total is None


def test_rate_limit_note_only_when_the_endpoint_refused() -> None:
    assert rate_limit_note(RunSummary(graded=5)) is None
    note = rate_limit_note(RunSummary(graded=5, slow_down=1234, lowest_in_flight=7))
    assert note is not None and note.startswith("1,234 次 429/503 应答；同时在途的请求降到 7")
    assert "限速" not in note
    note = rate_limit_note(RunSummary(graded=5, slow_down=3, lowest_in_flight=16, paced_rpm=3000.0,
                                      paced_tpm=9_000_000))
    assert note is not None and "按每分钟 3,000 个请求、每分钟 9,000,000 个令牌限速" in note


def test_a_second_pass_adds_to_the_progress_total() -> None:
    # kefu check with two wordings grades the labelled chats twice on one bar: it ends at 2n/2n, not 2n/n.
    from rich.progress import Progress

    from pipeline.cli.console import RichProgress

    with Progress(disable=True) as progress:
        sink = RichProgress(progress)
        for _ in range(2):
            sink.start(3)
            for _ in range(3):
                sink.advance(GRADE)
        task = progress.tasks[0]
        assert (task.completed, task.total) == (6, 6)
        assert task.description == "grading · 刚评完 (done) demo-024 · 已生成 (generated) 900 tokens"
