"""The `kefu` command line: the typer app that registers every command, and its entry point. Nothing imports it."""

from __future__ import annotations

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
        raise SystemExit(2) from None
