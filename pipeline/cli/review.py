"""`kefu review`: serves the review workbench over run folders."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.console import console, fail, out
from pipeline.errors import KefuError


def review_cmd(
    out_dirs: Annotated[list[Path], typer.Argument(help="Run folder(s) to review.")],
    host: Annotated[str, typer.Option(help="Address to bind; any but loopback requires the token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8765,
    token: Annotated[str | None, typer.Option(
        help="Access token when not bound to loopback (default: a new one, printed).")] = None,
) -> None:
    """Serve the review workbench over run folders: grades beside chats, labelling queues, disputes."""
    from pipeline.review import serve
    from pipeline.review.security import is_loopback, new_token

    needed = None if is_loopback(host) else (token or new_token())
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={needed}" if needed else "")
    out.print(f"复核工作台：{url}")
    if needed:
        out.print("非本机地址：每个请求都需要上面地址中的 token（或 Authorization: Bearer <token>）")
    console.print("[dim]Ctrl-C 停止[/dim]")
    try:
        serve(out_dirs, host=host, port=port, token=needed)
    except KefuError as exc:
        fail(exc)
