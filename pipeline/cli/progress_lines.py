"""How far a grading run is, for people: rate and time left from the grades so far, and plain lines for logs.

rich's own rate and time-left columns average over the last 30 s only, so a run slower than one grade
in 30 s (the embedded model on a CPU) never shows a time left; these use the whole run so far. When
stderr is a file or a pipe a live bar draws nothing, so `PlainProgress` prints a line every
`every` seconds and at every 5% instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import ProgressColumn, Task
from rich.text import Text

from pipeline.models.grade import Grade

PROGRESS_EVERY_ENV = "KEFU_PROGRESS_EVERY"
"""Seconds between plain progress lines (default `DEFAULT_EVERY`)."""
DEFAULT_EVERY = 30.0
STEP = 0.05
"""A plain line also at every this share of the run."""


def time_left(elapsed: float, done: int, total: int | None) -> float | None:
    """Seconds left at the average pace so far; None before the first grade or without a total."""
    if total is None or done <= 0 or elapsed <= 0:
        return None
    return elapsed / done * max(0, total - done)


def clock_text(seconds: float | None) -> str:
    """`1:02:03`, or `-:--:--` when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


def _since_start(task: Task) -> float:
    """Seconds since the runner started sending (not since the bar appeared: a local server takes a while)."""
    since = task.fields.get("since")
    return task.get_time() - since if isinstance(since, float) else 0.0


class RunRateColumn(ProgressColumn):
    """Grades per second over the whole run so far."""

    def render(self, task: Task) -> Text:
        elapsed = _since_start(task)
        return Text(f"{task.completed / elapsed:.2f}/s" if task.completed and elapsed > 0 else "")


class TimeLeftColumn(ProgressColumn):
    """Time left at the pace of the whole run so far, from the first grade on."""

    def render(self, task: Task) -> Text:
        total = None if task.total is None else int(task.total)
        return Text(clock_text(time_left(_since_start(task), int(task.completed), total)), style="progress.remaining")


class GeneratedTokens:
    """The chat graded last and the completion tokens so far, from the endpoint's usage.

    On a CPU a chat takes a minute or more, so the count of grades alone moves too seldom to show
    that work goes on; tokens are what the user is waiting for.
    """

    def __init__(self) -> None:
        self.last: str | None = None
        self.tokens = 0

    def add(self, grade: Grade) -> None:
        self.last = grade.transcript_id
        self.tokens += grade.completion_tokens

    def text(self) -> str:
        """`刚评完 (done) demo-024 · 已生成 (generated) 312 tokens`; chat ids are data, so escape them for rich."""
        return f"刚评完 (done) {escape(self.last or '—')} · 已生成 (generated) {self.tokens:,} tokens"


class PlainProgress:
    """The runner's ProgressSink as plain lines on a console that is not a terminal."""

    def __init__(self, console: Console, every: float = DEFAULT_EVERY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._console = console
        self._every = every
        self._clock = clock
        self._total: int | None = None
        self._done = 0
        self._tokens = GeneratedTokens()
        self._since = self._shown_at = clock()
        self._shown_share = 0.0

    def start(self, total: int | None) -> None:
        self._total = total
        self._since = self._shown_at = self._clock()

    def advance(self, grade: Grade) -> None:
        self._done += 1
        self._tokens.add(grade)
        now = self._clock()
        share = self._done / self._total if self._total else 0.0
        if now - self._shown_at >= self._every or share >= self._shown_share + STEP or share >= 1:
            self._shown_at, self._shown_share = now, share
            self._print(now)

    def skip(self, calls: int) -> None:
        if self._total is not None:
            self._total = max(0, self._total - calls)

    def show_total(self) -> None:
        """Nothing to bring up to date: each line is printed with the total as it is then."""

    def _print(self, now: float) -> None:
        elapsed = now - self._since
        total = "?" if self._total is None else str(self._total)
        share = f" ({self._done / self._total:.0%})" if self._total else ""
        rate = f"{self._done / elapsed:.2f}/s" if elapsed > 0 else "—"
        self._console.print(f"评分进度 (grading) {self._done}/{total}{share} · {rate} · 剩余约 (left) "
                            f"{clock_text(time_left(elapsed, self._done, self._total))} · {self._tokens.text()}",
                            highlight=False)
