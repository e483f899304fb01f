"""What the command modules share: error messages, the progress bar, the run log, id lists.

Kept apart from `cli` so that `cli_check` and `cli_batch` use the same pieces without importing
`cli` (nothing imports `cli`).
"""

from __future__ import annotations

import logging
import os
import signal
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
    TextColumn,
    TimeElapsedColumn,
)

from pipeline.cli.progress_lines import (
    DEFAULT_EVERY,
    PROGRESS_EVERY_ENV,
    GeneratedTokens,
    PlainProgress,
    RunRateColumn,
    TimeLeftColumn,
)
from pipeline.errors import FatalLLMError, KefuError, RubricError, TransientLLMError
from pipeline.grading.endpoints import LOCAL_MODEL_NOTICE, ResolvedEndpoint
from pipeline.grading.redaction import LABELS, PiiKind
from pipeline.models.grade import Grade
from pipeline.oserrors import os_problem, utf8_problem

if TYPE_CHECKING:
    from pipeline.consistency.sample_size import SampleSize
    from pipeline.grading.runner import RunSummary

#: Messages and progress go to stderr; results (tables, paths) to stdout, so they can be piped.
console = Console(stderr=True)
out = Console()


NEEDS_REVIEW_NOTE = "（聊天中有对评分者说的话，成绩需人工复核，不计入均值：见 scores.csv 的 needs_review 列）"
"""What the run summaries of `kefu grade` and `kefu batch collect` say beside the count of rows that need review."""


def fail(exc: KefuError) -> NoReturn:
    """Print a library error for people and exit: 3 for an endpoint still failing after retries, else 2."""
    # Messages are data (paths, ids, "[local]"): escape them so rich does not read them as markup. Not
    # wrapped at the terminal's width: one message stays one line, and paths in it can be copied.
    if isinstance(exc, RubricError):
        console.print(f"[red]评分表或词库有误 (rubric error)[/red]：{escape(exc.path)}", soft_wrap=True)
        for problem in exc.problems:
            console.print(f"  - {escape(problem)}", soft_wrap=True)
    elif isinstance(exc, FatalLLMError):
        console.print(f"[red]端点拒绝了请求 (the endpoint refused the request):[/red] {escape(str(exc))}\n"
                      f"  修正 (fix): {escape(exc.hint)}",
                      soft_wrap=True)
    else:
        console.print(f"[red]错误 (error)：[/red]{escape(str(exc))}", soft_wrap=True)
    raise typer.Exit(3 if isinstance(exc, TransientLLMError) else 2)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a plain `kill`, `timeout`): stops a command exactly as Ctrl-C does, with exit code 143."""


def stop_on_sigterm() -> None:
    """Make SIGTERM raise `Terminated` in the main thread, so every `finally` runs: finished grades are kept
    and the embedded model's server is stopped at once instead of outliving kefu."""
    def _terminate(signum: int, frame: object) -> None:
        raise Terminated

    signal.signal(signal.SIGTERM, _terminate)


def stopped(exc: KeyboardInterrupt, where: Path) -> NoReturn:
    """Say where the finished grades are and exit 130 (Ctrl-C) or 143 (SIGTERM), as a shell would report."""
    console.print(f"[yellow]已停止 (stopped).[/yellow] 已完成的评分都保存在 {escape(str(where))}；再运行同一命令即可"
                  "继续 (every finished grade is saved; run the same command again to resume).", soft_wrap=True)
    raise typer.Exit(143 if isinstance(exc, Terminated) else 130)


def read_ids(path: Path | None) -> set[str] | None:
    """The transcript ids listed one per line in `path` (for --ids), or None for no filter; "# " lines are comments."""
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8-sig")  # a list saved from Excel or Notepad starts with a BOM
    except (OSError, UnicodeDecodeError) as exc:
        why = os_problem(exc) if isinstance(exc, OSError) else utf8_problem(exc)
        console.print(f"[red]错误 (error)：[/red]无法读取 id 列表 {escape(str(path))}：{why} "
                      "(cannot read the --ids list)", soft_wrap=True)
        raise typer.Exit(2) from None
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("# ")}


def fail_run_folder(out_dir: Path, exc: OSError) -> NoReturn:
    """The run folder cannot be made or written: say which and why, exit 2."""
    console.print(f"[red]错误 (error)：[/red]无法写入运行文件夹 {escape(str(out_dir))}：{os_problem(exc)} "
                  "(cannot write to the run folder)", soft_wrap=True)
    raise typer.Exit(2) from None


def log_to(out_dir: Path) -> None:
    """Send the library's log (retries, fallbacks) to OUT/kefu.log instead of the terminal."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(out_dir / "kefu.log", encoding="utf-8")
    except OSError as exc:
        fail_run_folder(out_dir, exc)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("kefu")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    root.propagate = False
    logging.getLogger("httpx").setLevel(logging.WARNING)


def rate_limit_note(summary: RunSummary) -> str | None:
    """What the endpoint's refusals did to a run (pipeline.llm.pacing), for `grade` and `check` alike; None if none."""
    if not summary.slow_down:
        return None
    paced = [f"每分钟 {rate:,.0f} {unit}" for rate, unit in ((summary.paced_rpm, "个请求"),
                                                              (summary.paced_tpm, "个令牌")) if rate]
    return (f"{summary.slow_down:,} 次 429/503 应答；同时在途的请求降到 {summary.lowest_in_flight}"
            + (f"；按{'、'.join(paced)}限速（下次运行沿用）" if paced else "")
            + "（把 --rpm/--tpm 设在端点的限额附近可以避免）")


def tokens_text(prompt: int, cached: int | None, completion: int) -> str:
    """A run's token usage for its closing table (`kefu grade`, `kefu batch collect`)."""
    return f"提示 {prompt:,}" + (f"（其中缓存 {cached:,}）" if cached else "") + f"，回复 {completion:,}"


def redaction_text(on: bool, counts: dict[str, int]) -> str:
    """Whether personal data was replaced before sending, and how much of each kind (`PiiKind` values)."""
    replaced = "，".join(f"{LABELS[PiiKind(kind)]} {n}" for kind, n in counts.items())
    return ("开" if on else "关") + (f"  （{replaced}）" if replaced else "")


def warn_small_sample(sample: SampleSize) -> None:
    """Say on the console, after the tables and where it cannot be missed, that a check is too small for a verdict."""
    if (notice := sample.notice()) is not None:
        console.print(f"[bold yellow]⚠ {escape(notice)} ({escape(sample.notice('en') or '')})[/bold yellow]",
                      soft_wrap=True)


def announce(endpoint: ResolvedEndpoint) -> None:
    """Say once, visibly, when the small offline model is doing the grading."""
    if endpoint.local:
        console.print(f"[yellow]{escape(LOCAL_MODEL_NOTICE)}[/yellow]")


class RichProgress:
    """The runner's ProgressSink as a rich progress bar with rate and ETA."""

    def __init__(self, progress: Progress, clock: Callable[[], float] = time.monotonic) -> None:
        self._progress = progress
        self._clock = clock
        self._task = progress.add_task("grading", total=None)
        self._total: int | None = None
        self._shown = 0.0
        self._tokens = GeneratedTokens()

    def start(self, total: int | None) -> None:
        # A second pass on the same bar (kefu check with two wordings) adds to what is already done.
        done = int(self._progress.tasks[self._task].completed) if total is not None else 0
        self._total = None if total is None else done + total
        self._progress.update(self._task, total=self._total, since=self._progress.get_time())

    def advance(self, grade: Grade) -> None:
        self._tokens.add(grade)
        self._progress.update(self._task, total=self._total, advance=1,
                              description=f"grading · {self._tokens.text()}")

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
def grading_progress() -> Iterator[RichProgress | PlainProgress]:
    """A progress bar with count, rate, elapsed time and time left on a terminal's stderr; otherwise a plain
    line every KEFU_PROGRESS_EVERY seconds (default 30) and at every 5%."""
    if not console.is_terminal:
        try:
            every = float(os.environ.get(PROGRESS_EVERY_ENV, DEFAULT_EVERY))
        except ValueError:
            every = DEFAULT_EVERY
        plain = PlainProgress(console, every if every > 0 else DEFAULT_EVERY)
        yield plain
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RunRateColumn(),
               TimeElapsedColumn(), TimeLeftColumn())
    with Progress(*columns, console=console) as progress:
        sink = RichProgress(progress)
        try:
            yield sink
        finally:
            sink.show_total()
