"""Role names: the spellings of a role in JSONL and CSV, and the chat-log marks of bots and notices."""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.inputs.problems import shown
from pipeline.models.transcript import Role

ROLE_SYNONYMS: Mapping[str, Role] = {
    **dict.fromkeys(["customer", "user", "buyer", "客户", "顾客", "买家", "用户"], Role.customer),
    **dict.fromkeys(["agent", "seller", "assistant", "staff", "客服", "卖家", "商家"], Role.agent),
    **dict.fromkeys(["bot", "robot", "auto", "机器人", "自动回复"], Role.bot),
    **dict.fromkeys(["system", "系统"], Role.system),
}
"""Accepted spellings of `role` in JSONL and CSV, lower-cased; anything else is rejected."""

BOT_MARKERS = ("[自动回复]", "【自动回复】", "(自动回复)", "（自动回复）", "[机器人]", "【机器人】")
"""In a chat log, a message whose text starts with (or whose speaker contains) one of these is a bot's."""

SYSTEM_SPEAKERS = frozenset({"系统", "系统消息", "system"})
"""Chat-log speakers whose messages are platform notices."""


def role_of(value: str) -> Role | None:
    """The Role a JSONL/CSV role spelling stands for, or None if it is not one of ROLE_SYNONYMS."""
    return ROLE_SYNONYMS.get(value) or ROLE_SYNONYMS.get(value.strip().lower())


def unknown_role(value: object) -> str:
    return (f"unknown role {shown(value)} (use customer/agent/bot/system or a synonym such as "
            "客户/客服/机器人/系统; see eval_sets/README.md)")
