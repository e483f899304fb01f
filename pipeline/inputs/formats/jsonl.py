"""The JSON Lines format: one conversation per line, read and checked field by field."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from pipeline.inputs.fields import optional_label, required_text, star_rating
from pipeline.inputs.formats.base import ReadContext, SourceFile
from pipeline.inputs.limits import MAX_INT_DIGITS, MAX_JSON_DEPTH, json_too_deep
from pipeline.inputs.problems import FileRejected, Invalid, json_type, shown
from pipeline.inputs.roles import role_of, unknown_role
from pipeline.models.transcript import Finished, Reject, Transcript, Turn


def read_jsonl(
    raw_lines: Iterable[bytes], file: SourceFile, run: ReadContext
) -> Iterator[Transcript | Reject | Finished]:
    """Read JSON Lines; a line `run.memo` knows as finished comes out as Finished, before it is decoded."""
    lines = file.decoder.numbered(raw_lines)
    first = True
    first_line = 0  # the first line that was read (not skipped as finished)
    for number, raw in lines:
        if run.memo is not None:  # before decoding: a finished line costs a digest and nothing else
            source = f"{file.source}:{number}"
            finished = run.memo.lookup(raw, source)
            # A finished line whose id this run has read before is parsed, to be rejected as a duplicate.
            if finished is not None and run.ids.add(finished, file.number) is None:
                first = False
                yield Finished(finished, source)
                continue
        _, text, decoded = file.decoder.decode(number, raw)
        if not text or text.isspace():
            continue
        if first:
            first, first_line = False, number
            if _opens_a_document(text.strip()):
                raise FileRejected(Reject(file=file.source, line=number, reason=_ONE_DOCUMENT))
        obj = _parse_line(text) if decoded else _Unparsed(file.decoder.undecodable(number))
        if isinstance(obj, dict):
            yield _transcript_from_json(obj, file, number, run)
        elif isinstance(obj, _Unparsed):
            yield Reject(file=file.source, line=number, reason=obj.reason)
        else:
            yield Reject(file=file.source, line=number, reason=_ONE_DOCUMENT if number == first_line
                         and isinstance(obj, list) else f"expected a JSON object (one conversation), "
                                                        f"got {json_type(obj)}")


def _transcript_from_json(
    obj: dict[str, Any], file: SourceFile, number: int, run: ReadContext
) -> Transcript | Reject:
    conv_id: str | None = None
    try:
        conv_id = required_text(obj, "id", "id")
        if not conv_id.strip():
            raise Invalid("id", "empty 'id'")
        duplicate = run.ids.check_new(conv_id, file.source, file.number, number, id_field="id", split_hint=False)
        if duplicate is not None:
            return duplicate
        meta = {key: optional_label(obj, key, key) for key in ("platform", "shop", "agent_id")}
        rating = star_rating(obj.get("satisfaction"))
        raw_turns = obj.get("turns")
        if raw_turns is None:
            raise Invalid("turns", "missing field 'turns'")
        if not isinstance(raw_turns, list):
            raise Invalid("turns", f"'turns' must be a list of messages, got {json_type(raw_turns)}")
        if not raw_turns:
            raise Invalid("turns", "the conversation has no turns")
        turns = [turn for i, raw in enumerate(raw_turns)
                 if (turn := _turn_from_json(raw, i, run)) is not None]
        if not turns:
            raise Invalid("turns", "every turn has empty text")
    except Invalid as bad:
        return Reject(file=file.source, line=number, transcript_id=conv_id, field=bad.field,
                      reason=bad.reason)
    return Transcript(id=conv_id, turns=turns, source=f"{file.source}:{number}", satisfaction=rating, **meta)


def _turn_from_json(raw: object, index: int, run: ReadContext) -> Turn | None:
    """The Turn, or None for a turn with empty text (images and stickers export that way)."""
    where = f"turns[{index}]"
    if not isinstance(raw, dict):
        raise Invalid(where, f"{where} must be an object with role and text, got {json_type(raw)}")
    role_value = raw.get("role")
    if role_value is None:
        raise Invalid(f"{where}.role", f"missing field 'role' in {where}")
    role = role_of(role_value) if isinstance(role_value, str) else None
    if role is None:
        raise Invalid(f"{where}.role", unknown_role(role_value))
    text = required_text(raw, "text", f"{where}.text")
    if not text.strip():
        return None
    time_value = raw.get("time")
    blank_time = time_value is None or (isinstance(time_value, str) and not time_value.strip())
    return Turn(
        role=role, text=text, speaker=optional_label(raw, "speaker", f"{where}.speaker"),
        time=None if blank_time else run.time(time_value, f"{where}.time"),
    )


_ONE_DOCUMENT = ("this is one JSON document, not JSON Lines: put each conversation on a line of its own "
                 "(for an array: jq -c '.[]' in.json > out.jsonl)")


class _Unparsed(NamedTuple):
    """Why a JSON line has no value."""

    reason: str


def _parse_line(text: str) -> object:
    """The JSON value of one line, or _Unparsed with the reason (input_limits keeps the parser from failing
    in any other way)."""
    if json_too_deep(text):
        return _Unparsed(f"arrays and objects nested more than {MAX_JSON_DEPTH} levels deep")
    try:
        return json.loads(text, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        return _Unparsed(f"the key {shown(exc.key)} appears twice in one object: one of its values would be lost")
    except json.JSONDecodeError as exc:
        # Some of the parser's messages end in "at" ("Invalid control character at").
        return _Unparsed(f"not valid JSON: {exc.msg.removesuffix(' at')} at column {exc.colno}")
    except ValueError:  # the parser's only other error: an integer longer than Python reads
        return _Unparsed(f"a number on this line has more than {MAX_INT_DIGITS:,} digits")


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object as a dict, unless a key repeats: Python's parser would keep the last value and drop the
    first without a word (two "turns" lists, two "text"s in one turn)."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return obj


def _opens_a_document(start: str) -> bool:
    """True if a JSONL file's first line opens a JSON document spread over lines (`[`, `{`, `[{…},`).

    A first line that is a whole JSON array by itself is one bad line: the lines after it are still read.
    """
    if start in ("[", "{"):
        return True
    if not start.startswith("[") or json_too_deep(start):
        return False
    try:
        json.loads(start)
    except json.JSONDecodeError:
        return True
    except ValueError:  # a number too long: the line is whole, and _parse_line says so
        return False
    return False
