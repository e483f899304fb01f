"""What the command modules share: error messages, the progress bar, the run log, id lists.

Kept apart from `cli` so that `cli_check` and `cli_batch` use the same pieces without importing
`cli` (nothing imports `cli`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from pipeline.endpoints import LOCAL_MODEL_NOTICE, ResolvedEndpoint
from pipeline.errors import FatalLLMError, KefuError, RubricError, TransientLLMError
from pipeline.grader import Grade

if TYPE_CHECKING:
    from pipeline.runner import RunSummary

#: Messages and progress go to stderr; results (tables, paths) to stdout, so they can be piped.
console = Console(stderr=True)
out = Console()


def fail(exc: KefuError) -> NoReturn:
    """Print a library error for people and exit: 3 for an endpoint still failing after retries, else 2."""
    # Messages are data (paths, ids, "[local]"): escape them so rich does not read them as markup.
    if isinstance(exc, RubricError):
        console.print(f"[red]rubric error[/red] in {escape(exc.path)}:")
        for problem in exc.problems:
            console.print(f"  - {escape(problem)}")
    elif isinstance(exc, FatalLLMError):
        console.print(f"[red]the endpoint refused the request:[/red] {escape(str(exc))}\n  fix: {escape(exc.hint)}")
    else:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
    raise typer.Exit(3 if isinstance(exc, TransientLLMError) else 2)


def read_ids(path: Path | None) -> set[str] | None:
    """The transcript ids listed one per line in `path` (for --ids), or None for no filter."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot read the id list {path}: {exc.strerror}")
        raise typer.Exit(2) from None
    return {line.strip() for line in text.splitlines() if line.strip()}


def log_to(out_dir: Path) -> None:
    """Send the library's log (retries, fallbacks) to OUT/kefu.log instead of the terminal."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out_dir / "kefu.log", encoding="utf-8")
    except OSError as exc:
        console.print(f"[red]error:[/red] cannot write to the run folder {escape(str(out_dir))}: {exc.strerror}")
        raise typer.Exit(2) from None
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("kefu")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("httpx").setLevel(logging.WARNING)


def rate_limit_note(summary: RunSummary) -> str | None:
    """What the endpoint's refusals did to a run (pipeline.pacing), for `grade` and `check` alike; None if none."""
    if not summary.slow_down:
        return None
    paced = [f"{rate:,.0f} {unit} a minute" for rate, unit in ((summary.paced_rpm, "requests"),
                                                                 (summary.paced_tpm, "tokens")) if rate]
    return (f"{summary.slow_down:,} answers 429/503; in flight went down to {summary.lowest_in_flight}"
            + (f"; paced at {' and '.join(paced)} (kept for the next run)" if paced else "")
            + " (an --rpm/--tpm near the endpoint's limit avoids them)")


def announce(endpoint: ResolvedEndpoint) -> None:
    """Say once, visibly, when the small offline model is doing the grading."""
    if endpoint.local:
        console.print(f"[yellow]{escape(LOCAL_MODEL_NOTICE)}[/yellow]")


class RateColumn(ProgressColumn):
    """Grades per second."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed:.2f}/s" if task.speed else "")


class RichProgress:
    """The runner's ProgressSink as a rich progress bar with rate and ETA."""

    def __init__(self, progress: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self._progress = progress
        self._clock = clock
        self._task = progress.add_task("grading", total=None)
        self._total: int | None = None
        self._shown = 0.0

    def start(self, total: int | None) -> None:
        self._total = total
        self._progress.update(self._task, total=total)

    def advance(self, grade: Grade) -> None:
        self._progress.update(self._task, total=self._total, advance=1)

    def skip(self, calls: int) -> None:
        # Finished calls leave the total rather than count as done, so the rate and ETA are of real work.
        # A resume skips up to millions: the bar is told at most ten times a second.
        if self._total is not None:
            self._total = max(0, self._total - calls)
            now = self._clock()
            if now - self._shown >= 0.1:
                self._shown = now
                self.show_total()

    def show_total(self) -> None:
        """Bring the bar's total up to date (the last skips may not have been shown)."""
        self._progress.update(self._task, total=self._total)


@contextmanager
def grading_progress() -> Iterator[RichProgress]:
    """A progress bar with count, rate, elapsed time and ETA, on stderr."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        sink = RichProgress(progress)
        try:
            yield sink
        finally:
            sink.show_total()
