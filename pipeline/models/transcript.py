"""The transcript models: a conversation and its turns, an input that was rejected, a line already graded."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field


class Role(StrEnum):
    """Who wrote a turn. `bot` covers auto-replies and robots; `system` covers platform notices."""

    customer = "customer"
    agent = "agent"
    bot = "bot"
    system = "system"


class Turn(BaseModel):
    """One message."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role = Field(description="Who wrote it.")
    text: str = Field(description="The message text, as exported.")
    time: datetime | None = Field(default=None, description="When it was sent; timezone-aware where known.")
    speaker: str | None = Field(default=None, description="The nickname in the export, if any.")


class Transcript(BaseModel):
    """One conversation between a customer and a shop."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Conversation id, unique within a run.")
    turns: list[Turn] = Field(min_length=1, description="The messages in order.")
    platform: str | None = Field(default=None, description="taobao, tmall, douyin, xiaohongshu, …")
    shop: str | None = Field(default=None, description="The shop's name or id.")
    agent_id: str | None = Field(default=None, description="The agent who handled the chat.")
    satisfaction: int | None = Field(
        default=None, ge=1, le=5, description="The customer's 1–5 star rating of the session, if exported (满意度)."
    )
    source: str | None = Field(default=None, description="file:line where the conversation starts.")


class Reject(BaseModel):
    """An input that was not graded, and why."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str = Field(description="The input file.")
    line: int | None = Field(default=None, description="1-based line number (the first line, for a span).")
    transcript_id: str | None = Field(default=None, description="The conversation id, when it could be read.")
    field: str | None = Field(
        default=None, description="The offending field or column, when one is to blame."
    )
    reason: str = Field(description="What is wrong, in words a QA lead understands.")


class Finished(NamedTuple):
    """A JSON line the run has already graded in full (see `pipeline.grading.resume`): skipped, not parsed."""

    id: str
    source: str
