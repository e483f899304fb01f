"""Prompt rendering: the Jinja environment over prompts/, and the chat messages for one transcript.

Templates are rendered with StrictUndefined; rubric and transcript text go in as variables, never
as template source, so `{{` inside a chat stays literal. The user template never sees the Transcript
itself: every chat field it prints (turn text, shop, platform) has passed through `prompt_text`,
which indents every line after the first, so no field can start a line of the transcript block
(a fake turn header, a fake end marker or a "SYSTEM:" line). When a field addresses the grader
(`pipeline.checks.injection`), a note after the block names it and says it is neither an instruction nor
evidence. The system message depends only on the rubric and the criteria, so it is byte-identical
across transcripts and providers' prefix caches apply; the transcript comes last, between boundary
markers derived from its own content.

Rendering is on the hot path of a run: the system message is rendered once per rubric, criteria and
mode (compact or not: the limits it states come from `schema.reply_limits`, so the prompt and the
schema agree), and a transcript's hash and user message once per transcript object, though the
runner asks for them more than once between reading a transcript and grading it.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

import jinja2

from pipeline.checks.injection import find_injection
from pipeline.errors import ConfigError
from pipeline.grading.schema import reply_limits
from pipeline.models.transcript import Transcript, Turn
from pipeline.paths import PROMPTS_DIR
from pipeline.rubric.model import Criterion, Rubric

TEMPLATE_NAMES = ("system.j2", "user.j2", "reask.j2")

V = TypeVar("V")


class _PerObject(Generic[V]):
    """Values derived from a live object, remembered while it lives and forgotten when it is collected.

    Keyed by identity: rubrics and transcripts are frozen, so a changed one is a new object (model_copy),
    and they hold lists, so they cannot be dict keys themselves. Holds only weak references, so a run
    keeps entries for the transcripts in flight and no more.
    """

    def __init__(self) -> None:
        self._values: dict[int, tuple[weakref.ref[Any], V]] = {}

    def get(self, obj: object, compute: Callable[[], V]) -> V:
        """The value for `obj`, computed on first use."""
        key = id(obj)
        hit = self._values.get(key)
        if hit is not None and hit[0]() is obj:
            return hit[1]
        value = compute()
        self._values[key] = (weakref.ref(obj, self._forget(key)), value)
        return value

    def _forget(self, key: int) -> Callable[[weakref.ref[Any]], None]:
        def forget(ref: weakref.ref[Any]) -> None:
            hit = self._values.get(key)
            if hit is not None and hit[0] is ref:
                del self._values[key]

        return forget


_TRANSCRIPT_HASHES: _PerObject[str] = _PerObject()


def default_prompts_dir() -> Path:
    """`KEFU_PROMPTS_DIR`, else the repository's prompts/ beside the package."""
    env = os.environ.get("KEFU_PROMPTS_DIR")
    return Path(env) if env else PROMPTS_DIR


class RenderedTurn(NamedTuple):
    """A turn as the prompt shows it: its 1-based number, role, short time and text.

    A NamedTuple, not a dataclass: a run builds one per turn of every transcript.
    """

    number: int
    role: str
    time: str | None
    text: str


class PromptChat(NamedTuple):
    """The chat-level fields the user template prints, each already through `prompt_text`."""

    platform: str | None
    shop: str | None


def prompt_text(value: str) -> str:
    """A chat field as prompt text: every line boundary becomes a newline and an indent.

    The boundaries are those of `str.splitlines` (\\n, \\r, \\r\\n, \\v, \\f, \\x1c-\\x1e, U+0085, U+2028,
    U+2029): a model may read any of them as a line break, so each must be followed by the indent.
    """
    lines = value.splitlines()
    return lines[0] if len(lines) == 1 else "\n    ".join(lines)


class PromptSet:
    """The three templates of one rubric language, with their combined content hash."""

    def __init__(self, language: str, prompts_dir: Path | None = None) -> None:
        root = (prompts_dir or default_prompts_dir()) / language
        if not all((root / name).is_file() for name in TEMPLATE_NAMES):
            raise ConfigError(f"no prompt templates for language {language!r} in {root} (need {TEMPLATE_NAMES})")
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(root),
            undefined=jinja2.StrictUndefined,
            autoescape=False,  # plain-text prompts; HTML escaping belongs to reports
            keep_trailing_newline=False,
        )
        digest = hashlib.sha256()
        for name in TEMPLATE_NAMES:
            digest.update(name.encode())
            digest.update((root / name).read_bytes())
        self.template_hash = digest.hexdigest()
        self._systems: _PerObject[dict[tuple[bool, tuple[str, ...]], str]] = _PerObject()
        self._users: _PerObject[str] = _PerObject()

    def system(self, rubric: Rubric, criteria: Sequence[Criterion], *, compact: bool = False) -> str:
        """The system message: instructions and every criterion with its levels (cached per criteria set and mode)."""
        by_ids = self._systems.get(rubric, dict)
        key = (compact, tuple(c.id for c in criteria))
        if key not in by_ids:
            limits = reply_limits(compact)
            by_ids[key] = self._render(
                "system.j2", rubric=rubric, criteria=list(criteria), max_evidence=limits.evidence,
                max_quote_chars=limits.quote_chars, max_reasoning_chars=limits.reasoning_chars,
                score_first=limits.score_first,
            )
        return by_ids[key]

    def user(self, transcript: Transcript) -> str:
        """The user message: the transcript as numbered, role-labelled turns between boundary markers."""
        return self._users.get(transcript, lambda: self._render(
            "user.j2",
            chat=PromptChat(_field(transcript.platform), _field(transcript.shop)),
            turns=[_render_turn(i, t) for i, t in enumerate(transcript.turns, start=1)],
            boundary=transcript_boundary(transcript),
            suspected=find_injection(transcript),
        ))

    def reask(self, error: str, criterion_ids: Sequence[str]) -> str:
        """The follow-up that carries a validation error back to the model (once)."""
        return self._render("reask.j2", error=error, criterion_ids=list(criterion_ids))

    def messages(self, rubric: Rubric, criteria: Sequence[Criterion], transcript: Transcript, *,
                 compact: bool = False) -> list[dict[str, str]]:
        """The chat messages for grading one transcript on these criteria."""
        return [
            {"role": "system", "content": self.system(rubric, criteria, compact=compact)},
            {"role": "user", "content": self.user(transcript)},
        ]

    def _render(self, name: str, **variables: Any) -> str:
        return self._env.get_template(name).render(**variables).strip() + "\n"


def transcript_boundary(transcript: Transcript) -> str:
    """A marker token derived from the transcript's own content, so its text cannot forge the end marker."""
    return transcript_hash(transcript)[:12]


def transcript_hash(transcript: Transcript) -> str:
    """sha256 of the transcript's canonical JSON: the transcript part of every resume key."""
    return _TRANSCRIPT_HASHES.get(
        transcript, lambda: hashlib.sha256(transcript.model_dump_json().encode("utf-8")).hexdigest()
    )


def _field(value: str | None) -> str | None:
    return prompt_text(value) if value else value


def _render_turn(number: int, turn: Turn) -> RenderedTurn:
    text = prompt_text(turn.text)
    t = turn.time
    # MM-DD HH:MM:SS; formatted by hand, which costs half of strftime.
    time = f"{t.month:02d}-{t.day:02d} {t.hour:02d}:{t.minute:02d}:{t.second:02d}" if t else None
    return RenderedTurn(number, str(turn.role), time, text)
