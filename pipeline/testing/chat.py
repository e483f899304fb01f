"""Reading a chat request: its messages' text, the JSON schema it asks for, and token counts of it and its reply."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from pipeline.testing.instances import InstanceUnsupportedError, JSONSchema

_EMBEDDED_SCHEMA = re.compile(r"<json_schema>(.*?)</json_schema>", re.DOTALL)
_PADDING = "先看顾客的问题，再看客服的回答。"


def schema_for(
    messages: list[Any], response_format: Mapping[str, Any], fallback: JSONSchema | None
) -> JSONSchema | None:
    """The schema a reply follows: the response_format's, else the last one in the prompt, else `fallback`."""
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, Mapping):
            raise InstanceUnsupportedError("response_format.json_schema.schema is missing")
        return schema
    embedded = [
        match for message in messages for match in _EMBEDDED_SCHEMA.findall(message_text(message))
    ]
    if embedded:
        try:
            schema = json.loads(embedded[-1])
        except json.JSONDecodeError as exc:
            raise InstanceUnsupportedError(f"the <json_schema> in the prompt is not JSON: {exc}") from exc
        if not isinstance(schema, Mapping):
            raise InstanceUnsupportedError("the <json_schema> in the prompt is not a JSON object")
        return schema
    return fallback


def message_text(message: Any) -> str:
    """The text of one chat message, whether its content is a string or a list of parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def prompt_tokens_of(body: Any) -> int:
    """The prompt tokens a chat body's `usage` will report (0 for a body that is not a chat)."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return 0
    return estimate_tokens(sum(len(message_text(message)) for message in messages))


def reasoning_padding(chars: int) -> str:
    """`chars` characters of filler `reasoning_content`, to make replies heavier."""
    return (_PADDING * (chars // len(_PADDING) + 1))[:chars]


def estimate_tokens(chars: int) -> int:
    """Two characters a token: close enough for mixed Chinese and ASCII, and stated in the docs."""
    return (chars + 1) // 2
