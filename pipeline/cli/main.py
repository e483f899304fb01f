"""The `kefu` command line: the typer app that registers every command, and its entry point. Nothing imports it."""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

import typer
from rich.markup import escape

from pipeline.cli.batch import batch_app
from pipeline.cli.check import check, report
from pipeline.cli.console import console, stop_on_sigterm
from pipeline.cli.grade import demo, grade
from pipeline.cli.help import PlainHelpGroup
from pipeline.cli.local import prepare_local, serve_local
from pipeline.cli.outputs import export_cmd, sample_cmd, summary_cmd
from pipeline.cli.review import review_cmd
from pipeline.cli.rubric import rubric_app
from pipeline.oserrors import os_problem

app = typer.Typer(help="kefu-qa: LLM-graded quality inspection of customer-service chats.", no_args_is_help=True,
                  cls=PlainHelpGroup)
app.add_typer(rubric_app, name="rubric")
app.add_typer(batch_app, name="batch")
app.command("check")(check)
app.command("report")(report)
app.command()(grade)
app.command()(demo)
app.command("prepare-local")(prepare_local)
app.command("serve-local")(serve_local)
app.command("export")(export_cmd)
app.command("summary")(summary_cmd)
app.command("sample")(sample_cmd)
app.command("review")(review_cmd)


def main() -> None:
    """Entry point for `kefu` and `python -m pipeline`."""
    stop_on_sigterm()
    try:
        app()
    except OSError as exc:  # a full disk, a permission, a path: the machine's state, not a bug, so no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        console.print(f"[red]错误 (error)：[/red]{escape(where + os_problem(exc))}", soft_wrap=True)
        _exit(2)
    except SystemExit as exc:  # typer ends every command this way, its exit code in it
        _exit(exc.code)


def _exit(code: object) -> NoReturn:
    """End the process with `code` as `sys.exit` would, but without tearing the interpreter down.

    Freeing every module and object at exit (the `openai` SDK alone is some 900 modules) cost `kefu grade`
    0.3 s of CPU after its last grade, on a run whose ideal is 21 s. Everything a command writes is closed
    by then; the atexit handlers still run (logging's flushes and closes OUT/kefu.log), and stdout and
    stderr are flushed. A message for an exit code, or a thread still running, takes the ordinary way out.
    """
    if not isinstance(code, int | None) or any(
            thread.is_alive() and not thread.daemon for thread in threading.enumerate()
            if thread is not threading.current_thread()):
        raise SystemExit(code)
    atexit._run_exitfuncs()
    status = code or 0
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe (`kefu … | head`): Python's own exit says 120
            status = status or 120
    os._exit(status)
