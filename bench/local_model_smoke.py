"""Smoke benchmark of the embedded model: join, start, and two structured grading requests.

Measures what a first offline run costs: joining the GGUF, llama-server's time to /health, a
first request (cold prompt cache) and a second one with the same system prompt (warm prefix),
the server's resident memory, and whether each reply validates against the grade schema.
The prompt and schema are the pipeline's own (prompts/zh, pipeline.grading.schema), on the first
--criteria criteria of the rubric; the chats are the first two transcripts of --transcripts.

    /tmp/venv/bin/python bench/local_model_smoke.py [--model-path GGUF] [--criteria 6]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.grading.prompting import PromptSet  # noqa: E402
from pipeline.grading.schema import GradeSchema, build_grade_schema  # noqa: E402
from pipeline.llm.local.model import LocalServer, context_size_for, model_identity, prepare_model  # noqa: E402
from pipeline.models.transcript import Transcript  # noqa: E402
from pipeline.rubric.load import load_rubric  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, help="a GGUF to serve (default: join the extra's parts)")
    parser.add_argument("--binary", type=Path, help="a llama-server-compatible executable (default: the extra's)")
    parser.add_argument("--rubric", type=Path, default=ROOT / "rubric" / "ecommerce_cs.yaml")
    parser.add_argument("--transcripts", type=Path, default=ROOT / "eval_sets" / "ecommerce_cs.jsonl")
    parser.add_argument("--criteria", type=int, default=6, help="how many criteria (sets the prompt length)")
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--log", type=Path, default=Path("/tmp/kefu-local-model-smoke.log"))
    parser.add_argument("--replies", type=Path, default=Path("/tmp/kefu-local-model-smoke-replies.jsonl"))
    return parser.parse_args()


def rss_mib(pid: int) -> tuple[float, float]:
    """Current and peak resident set size of a process, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def count_tokens(base_url: str, text: str) -> int:
    """Tokens in `text` by the served model's own tokenizer (llama-server's /tokenize)."""
    request = urllib.request.Request(
        base_url.removesuffix("/v1") + "/tokenize",
        data=json.dumps({"content": text}).encode("utf-8"),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=60) as response:
        return len(json.load(response)["tokens"])


def grade_once(
    client: OpenAI,
    model: str,
    messages: list[dict[str, str]],
    schema: GradeSchema,
    max_tokens: int,
    label: str,
    replies: Path,
) -> list[tuple[str, str]]:
    """One structured grading request; table rows with its time, validity, tokens and llama.cpp timings."""
    started = time.perf_counter()
    reply = client.chat.completions.create(
        model=model,
        messages=messages,
        response_format=schema.response_format,
        temperature=0,
        max_tokens=max_tokens,
    )
    elapsed = time.perf_counter() - started
    with replies.open("a", encoding="utf-8") as out:
        out.write(reply.model_dump_json() + "\n")
    try:
        schema.model.model_validate_json(reply.choices[0].message.content or "")
        valid = "valid"
    except ValueError as exc:
        valid = f"INVALID ({str(exc).splitlines()[0]})"
    rows = [(label, f"{elapsed:.2f} s, reply {valid}, finish={reply.choices[0].finish_reason}")]
    if reply.usage is not None:
        usage = reply.usage
        cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else None
        rows.append(
            (
                "  tokens",
                f"prompt {usage.prompt_tokens} (cached {cached}), completion {usage.completion_tokens}",
            )
        )
    timings: dict[str, Any] = (reply.model_extra or {}).get("timings", {})
    if timings:
        prompt = f"prompt eval {timings['prompt_n']} tok at {timings['prompt_per_second']:.1f} tok/s"
        generation = f"generation {timings['predicted_n']} tok at {timings['predicted_per_second']:.1f} tok/s"
        rows.append(("  llama.cpp timings", f"{prompt}; {generation}"))
    return rows


def main() -> None:
    args = parse_args()
    rows: list[tuple[str, str]] = []

    started = time.perf_counter()
    model_path = args.model_path or prepare_model()
    rows.append(("prepare_model (join+verify, or marker check)", f"{time.perf_counter() - started:.2f} s"))
    alias = model_identity(model_path)

    rubric = load_rubric(args.rubric)
    criteria = rubric.criteria()[: args.criteria]
    prompts = PromptSet(rubric.language)
    schema = build_grade_schema(criteria)
    lines = args.transcripts.read_text(encoding="utf-8").splitlines()
    chats = [Transcript.model_validate_json(line) for line in lines[:2]]
    conversations = [prompts.messages(rubric, criteria, chat) for chat in chats]
    # One character is at most one token for this tokenizer on Chinese text: a safe upper bound.
    longest = max(sum(len(m["content"]) for m in messages) for messages in conversations)
    context = context_size_for(longest, args.max_tokens)

    started = time.perf_counter()
    server = LocalServer(model_path, context_size=context, alias=alias, binary=args.binary, log_path=args.log)
    with server:
        rows.append(("time to /health 200", f"{time.perf_counter() - started:.2f} s"))
        assert server.process is not None
        rows.append(("llama-server args", " ".join(str(arg) for arg in server.process.args[1:])))
        rss, _ = rss_mib(server.process.pid)
        rows.append(("server RSS after load", f"{rss:.0f} MiB"))
        system_tokens = count_tokens(server.base_url, conversations[0][0]["content"])
        rows.append(("system prompt", f"{system_tokens} tokens, {len(criteria)} criteria"))
        client = OpenAI(base_url=server.base_url, api_key="local", max_retries=0, timeout=900)
        labels = ("first request", "second request (same system prompt)")
        for label, messages in zip(labels, conversations, strict=True):
            rows += grade_once(client, server.model, messages, schema, args.max_tokens, label, args.replies)
        rss, peak = rss_mib(server.process.pid)
        rows.append(("server RSS now / peak", f"{rss:.0f} MiB / {peak:.0f} MiB"))

    width = max(len(name) for name, _ in rows)
    print(f"model {alias}  context {context}  log {args.log}  replies {args.replies}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
