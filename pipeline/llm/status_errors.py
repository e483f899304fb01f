"""What an HTTP status from the model endpoint means: retry it, or stop with a hint that says what to fix.

The one mapping for chat calls (pipeline/llm/client.py) and the files and batches API (pipeline/batch/provider.py),
so that both retry the same statuses and give the same advice.
"""

from __future__ import annotations

from pipeline.errors import FatalLLMError, TransientLLMError

_TRANSIENT = frozenset({408, 409, 429})
"""Statuses worth retrying besides every 5xx: a timeout, a conflict, a rate limit."""

_HINTS = {
    400: "端点拒绝了请求：检查 --model、--max-tokens 和上下文长度 "
         "(the endpoint rejected the request; check --model, --max-tokens and the context length)",
    403: "该密钥无权使用此模型或端点：检查密钥的权限和 --model "
         "(the API key may not use this model or endpoint: check the key's permissions and --model)",
    404: "未找到：检查 --base-url（通常以 /v1 结尾）和该端点上是否有 --model 这个模型 "
         "(not found: check --base-url, usually ending in /v1, and that --model exists on the endpoint)",
    422: "端点无法处理该请求：检查 --model 和采样参数 "
         "(the endpoint could not process the request; check --model and the sampling options)",
}
_BATCH_HINTS = {
    403: "该密钥无权使用 Batch API 或此模型 (the API key may not use the Batch API or this model)",
    404: _HINTS[404] + "；很多兼容 OpenAI 的服务器没有 Batch API：可用 `kefu batch write`、vLLM 的 run_batch 和 "
         "`kefu batch collect-local` (many OpenAI-compatible servers have no Batch API)",
}
_OTHER = "见上面的消息 (see the message)"


def is_transient(status: int) -> bool:
    """Whether a request that got `status` may succeed if sent again."""
    return status in _TRANSIENT or status >= 500


def status_hint(status: int, *, key_env: str = "OPENAI_API_KEY", batch: bool = False) -> str:
    """What to fix after a refusal; `key_env` names the variable the key was read from."""
    if status == 401:
        return (f"API 密钥被拒绝：把环境变量 {key_env} 设为此端点的有效密钥（或用 --api-key-env 指定存放密钥的变量） "
                f"(the API key was refused: set {key_env}, or name another variable with --api-key-env)")
    return (_BATCH_HINTS.get(status) if batch else None) or _HINTS.get(status, _OTHER)


def error_for_status(status: int, message: str, *, retry_after: float | None = None,
                     key_env: str = "OPENAI_API_KEY", batch: bool = False) -> TransientLLMError | FatalLLMError:
    """The error to raise for a response with `status`; `message` already says what failed.

    A batch step is resumed by running it again, and a transient error says so.
    """
    if is_transient(status):
        note = " (run the same command again: it resumes)" if batch else ""
        return TransientLLMError(message + note, status=status, retry_after=retry_after)
    return FatalLLMError(message, status=status, hint=status_hint(status, key_env=key_env, batch=batch))
