"""The chat-log text format: messages under `time nickname:` headers, conversations between separator lines."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.inputs.fields import checked_label
from pipeline.inputs.formats.base import Pending, ReadContext, SourceFile
from pipeline.inputs.problems import Invalid
from pipeline.inputs.roles import BOT_MARKERS, SYSTEM_SPEAKERS
from pipeline.models.transcript import Reject, Role, Transcript, Turn


def read_chatlog(raw_lines: Iterable[bytes], file: SourceFile, run: ReadContext) -> Iterator[Transcript | Reject]:
    """Read chat-log text: message headers with nicknames, conversations between separator lines."""
    lines = file.decoder.lines(raw_lines)
    pending: Pending | None = None
    message: _Message | None = None
    unnamed = Path(file.source).stem  # the id of a conversation before any separator line
    for number, text, decoded in lines:
        stripped = text.strip()
        separator = _separator_id(stripped) if stripped and stripped[0] in "-=#" else None
        if separator is not None:
            if pending is not None:
                yield _finish_chatlog(pending, message, file, run)
            pending, message = Pending(separator, number), None
            continue
        header = _chatlog_header(stripped)
        if header is None and (message is not None or not stripped) and decoded:
            if message is not None:
                message.lines.append(stripped)
            continue
        if pending is None:
            pending = Pending(unnamed, number)
        if not decoded:
            pending.fail(number, None, file.decoder.undecodable(number))
        elif header is None:
            pending.fail(number, None, f"text before the first message header: {stripped[:40]!r} "
                                       "(expected a line like '2026-03-02 10:15:03 小明: …' "
                                       "or '小明 2026-03-02 10:15:03')")
        else:
            _add_chatlog_message(pending, message, run)
            speaker, time, first_text = header
            message = _Message(number, speaker, time, [first_text])
    if pending is not None:
        yield _finish_chatlog(pending, message, file, run)


def _add_chatlog_message(pending: Pending, message: _Message | None, run: ReadContext) -> None:
    if message is None:
        return
    pending.messages += 1
    text = "\n".join(message.lines).strip()
    try:
        time = run.time(message.time, "time")
        speaker = checked_label(message.speaker, "speaker")
    except Invalid as bad:
        pending.fail(message.line, bad.field, bad.reason)
        return
    if text:
        pending.turns.append(Turn(role=_speaker_role(speaker, text, run), text=text, time=time, speaker=speaker))


def _finish_chatlog(pending: Pending, last: _Message | None, file: SourceFile, run: ReadContext) -> Transcript | Reject:
    _add_chatlog_message(pending, last, run)
    speakers = list(dict.fromkeys(turn.speaker for turn in pending.turns if turn.speaker))
    agents = {turn.speaker for turn in pending.turns if turn.role is Role.agent and turn.speaker}
    if pending.turns and not agents and all(turn.role is not Role.bot for turn in pending.turns):
        pending.fail(pending.line, "speaker",
                     f"no speaker is recognised as the shop (speakers: {', '.join(speakers[:5])}): "
                     "pass the agents' nicknames as shop speakers, or the chat was never answered")
    if len(agents) == 1:
        pending.meta["agent_id"] = next(iter(agents))
    main_accounts = {name.split(":", 1)[0] for name in agents}
    if len(main_accounts) == 1 and all(":" in name for name in agents):
        pending.meta["shop"] = next(iter(main_accounts))
    return run.finish(pending, file, id_field=None, split_hint=False)


def _speaker_role(speaker: str, text: str, run: ReadContext) -> Role:
    """The role of a chat-log nickname; the rule is documented in eval_sets/README.md."""
    if (speaker in run.bot_speakers or "机器人" in speaker or text.startswith(BOT_MARKERS)
            or any(marker in speaker for marker in BOT_MARKERS)):
        return Role.bot
    if speaker in run.shop_speakers or ":" in speaker or speaker.startswith(run.shop_prefixes):
        return Role.agent
    if speaker in SYSTEM_SPEAKERS:
        return Role.system
    return Role.customer


@dataclass
class _Message:
    """A chat-log message whose continuation lines are still being read."""

    line: int
    speaker: str
    time: str
    lines: list[str]


_TIME_TEXT = r"\d{4}[-/]\d{1,2}[-/]\d{1,2}[ T]\d{1,2}:\d{2}(?::\d{2})?"
# "id" is a label unless nothing but dashes follows it: then it is the id itself (`# 会话 id`).
_SEPARATOR_START = re.compile(r"(?:[-=]{3,}|#)\s*(?:会话|conversation)\s*(?:id(?![-=\s]*$))?\s*[:：]?\s*",
                              re.IGNORECASE)
_WHITESPACE = re.compile(r"\s")


def _separator_id(line: str) -> str | None:
    """The id of a separator line (`----- 会话 c1 -----`, `# conversation: c1`), or None if `line` is not one.

    Only the start is a pattern; the id is the rest without its trailing dashes. As one pattern, a lazy id
    followed by optional dashes took time quadratic in the line's length (`#会话 x---…---y` stalled the run).
    """
    start = _SEPARATOR_START.match(line)
    if start is None:
        return None
    conv_id = line[start.end():].rstrip("-=").rstrip()
    if not conv_id or conv_id[0] in "-=" or _WHITESPACE.search(conv_id):
        return None
    return conv_id
# `2026-03-02 10:15:03 小明: 内容`. The nickname ends at a full-width colon or at a colon followed by a
# space or the line's end, so that a 旺旺 sub-account `店铺名:小美` keeps its own colon.
_TIME_FIRST = re.compile(rf"(?P<time>{_TIME_TEXT})\s+(?P<name>\S+?)(?:：|:(?=\s|$))\s*(?P<text>.*)")
_TIME_FIRST_BARE = re.compile(rf"(?P<time>{_TIME_TEXT})\s+(?P<name>[^\s:：]+)[:：](?P<text>.*)")
# `小明 2026-03-02 10:15:03` or `店铺名:小美 (2026-03-02 10:15:03):`, the text on the next lines.
# Matched as the line's tail, searched for, so that the name needs no pattern of its own: a lazy name followed
# by optional spaces took time cubic in the line's length (a line of spaces ending in ')' stalled the run).
_NAME_FIRST_TAIL = re.compile(rf"[(（]?(?P<time>{_TIME_TEXT})[)）]?\s*[:：]?\Z")


def _chatlog_header(line: str) -> tuple[str, str, str] | None:
    """(speaker, time, text on the same line) if `line` starts a message."""
    if not line:
        return None
    if line[0].isdigit():
        match = _TIME_FIRST.fullmatch(line) or _TIME_FIRST_BARE.fullmatch(line)
        if match:
            return match["name"], match["time"], match["text"]
    if line[-1].isdigit() or line[-1] in "):）：":
        match = _NAME_FIRST_TAIL.search(line)
        if match and (name := line[:match.start()].rstrip()):
            return name, match["time"], ""
    return None
