"""llama.cpp's HTTP server run in-process by `xllamacpp`, behind llama-server's command line.

`python -m pipeline.llm.local.server -m MODEL --host 127.0.0.1 --port P …` behaves like llama.cpp's own
`llama-server` for the flags kefu-qa uses, and serves the same OpenAI-compatible API (with
`response_format: json_schema` and prompt-prefix reuse). xllamacpp is used rather than a prebuilt
llama-server binary because its CPU backend is built without AVX-512, which the prebuilt wheel we
tried needs (it died with SIGILL on an AVX2-only EPYC). It stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Sequence


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The subset of llama-server's flags that LocalServer passes."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.llm.local.server", description=__doc__)
    ap.add_argument("-m", "--model", required=True, help="GGUF file")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("-tb", "--threads-batch", type=int, default=None)
    ap.add_argument("-c", "--ctx-size", type=int, default=4096)
    ap.add_argument("-np", "--parallel", type=int, default=1)
    ap.add_argument("--cache-reuse", type=int, default=256)
    ap.add_argument("--alias", default=None)
    # Accepted for llama-server compatibility; they are always on here.
    for flag in ("--cache-prompt", "--jinja", "--no-webui", "--offline"):
        ap.add_argument(flag, action="store_true")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    import xllamacpp  # the `local` extra (mypy: ignore_missing_imports in pyproject)

    args = parse_args(argv)
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.hostnames = [args.host]
    params.port = args.port
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads_batch or args.threads
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cache_prompt = True
    params.n_cache_reuse = args.cache_reuse
    params.use_jinja = True
    if args.alias:
        params.model_alias = {args.alias}
    params.ui = False
    params.offline = True
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = xllamacpp.Server(params)
    stop.wait()
    del server  # shuts the HTTP server and frees the model


if __name__ == "__main__":
    main()
