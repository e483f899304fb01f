"""JSON values generated from a JSON schema: what the mock server answers when nothing is scripted."""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Mapping
from typing import Any, TypeAlias

JSONSchema: TypeAlias = Mapping[str, Any]

_PHRASES = ("好的", "亲，您好", "已为您核实", "物流延迟", "退款已处理", "ok", "refund", "order 1234")
# Past this depth only required properties and minItems items are generated, so recursive models end.
_OPTIONAL_DEPTH = 6
_MAX_DEPTH = 32
# Keywords whose constraints the generator cannot honour: refusing beats replying with invalid JSON.
_UNSUPPORTED = ("pattern", "multipleOf", "not", "if", "patternProperties", "minProperties", "contains")
_FORMATS = {
    "date-time": "2024-06-18T08:00:00Z",
    "date": "2024-06-18",
    "time": "08:00:00Z",
    "email": "kefu@example.com",
    "uri": "https://example.com/",
}


class InstanceUnsupportedError(ValueError):
    """The schema asks for something `generate_instance` cannot satisfy; the server answers 400 with it."""


def generate_instance(schema: JSONSchema, rng: random.Random) -> Any:
    """A JSON value valid for `schema`, with every open choice drawn from `rng`.

    Supports `$ref` into the same document (`$defs`/`definitions`), `const`, `enum`, `anyOf`/`oneOf`
    (one branch, preferring non-null; for `oneOf` the branches are assumed disjoint), `allOf` (merged),
    `type` lists, object `properties`/`required`/`additionalProperties`, `items`/`minItems`/
    `maxItems`/`uniqueItems`, `minimum`/`maximum`/`exclusiveMinimum`/`exclusiveMaximum`,
    `minLength`/`maxLength` and a few string `format`s. Keywords in `_UNSUPPORTED` raise.
    """
    return _generate(schema, schema, rng, 0)


def _generate(node: JSONSchema, root: JSONSchema, rng: random.Random, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise InstanceUnsupportedError(f"schema nests deeper than {_MAX_DEPTH} levels (a required $ref cycle?)")
    if bad := [key for key in _UNSUPPORTED if key in node]:
        raise InstanceUnsupportedError(f"the mock server cannot honour {', '.join(bad)}")
    if "$ref" in node:
        return _generate(_resolve_ref(root, node["$ref"]), root, rng, depth + 1)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        if not node["enum"]:
            raise InstanceUnsupportedError("an empty enum admits no value")
        return rng.choice(node["enum"])
    for key in ("anyOf", "oneOf"):
        if key in node:
            return _generate(_pick_branch(node[key], root, rng), root, rng, depth + 1)
    if "allOf" in node:
        return _generate(_merge_all_of(node, root), root, rng, depth + 1)
    kind = _pick_type(node, rng)
    if kind == "object":
        return _generate_object(node, root, rng, depth)
    if kind == "array":
        return _generate_array(node, root, rng, depth)
    if kind == "integer":
        return _generate_integer(node, rng)
    if kind == "number":
        return _generate_number(node, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _generate_string(node, rng)


def _resolve_ref(root: JSONSchema, ref: str) -> JSONSchema:
    if not ref.startswith("#"):
        raise InstanceUnsupportedError(f"only local $ref is supported, got {ref!r}")
    node: Any = root
    for part in filter(None, ref[1:].split("/")):
        key = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, Mapping) or key not in node:
            raise InstanceUnsupportedError(f"$ref {ref!r} points nowhere")
        node = node[key]
    if not isinstance(node, Mapping):
        raise InstanceUnsupportedError(f"$ref {ref!r} is not a schema")
    return node


def _is_null(branch: JSONSchema, root: JSONSchema) -> bool:
    resolved = _resolve_ref(root, branch["$ref"]) if "$ref" in branch else branch
    return resolved.get("type") == "null"


def _pick_branch(branches: list[JSONSchema], root: JSONSchema, rng: random.Random) -> JSONSchema:
    # Non-null branches first: a reply full of nulls exercises nothing downstream.
    useful = [branch for branch in branches if not _is_null(branch, root)]
    return rng.choice(useful or branches)


def _merge_all_of(node: JSONSchema, root: JSONSchema) -> JSONSchema:
    merged: dict[str, Any] = {key: value for key, value in node.items() if key != "allOf"}
    for part in node["allOf"]:
        resolved = _resolve_ref(root, part["$ref"]) if "$ref" in part else part
        for key, value in resolved.items():
            if key == "properties":
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required":
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged[key] = value
    return merged


def _pick_type(node: JSONSchema, rng: random.Random) -> str:
    kind = node.get("type")
    if isinstance(kind, list):
        useful = [name for name in kind if name != "null"]
        return str(rng.choice(useful)) if useful else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in node:
        return "object"
    if "items" in node:
        return "array"
    return "string"


def _generate_object(node: JSONSchema, root: JSONSchema, rng: random.Random, depth: int) -> dict[str, Any]:
    properties: Mapping[str, JSONSchema] = node.get("properties", {})
    required: list[str] = list(node.get("required", []))
    names = list(properties) if depth < _OPTIONAL_DEPTH else [n for n in properties if n in required]
    value = {name: _generate(properties[name], root, rng, depth + 1) for name in names}
    extra = node.get("additionalProperties", True)
    for name in required:
        if name not in value:
            if extra is False:
                raise InstanceUnsupportedError(f"required property {name!r} is not allowed by the schema")
            value[name] = _generate(extra if isinstance(extra, Mapping) else {}, root, rng, depth + 1)
    return value


def _generate_array(node: JSONSchema, root: JSONSchema, rng: random.Random, depth: int) -> list[Any]:
    low = int(node.get("minItems", 0))
    high = min(int(node.get("maxItems", max(low, 2))), max(low, 2))
    if depth >= _OPTIONAL_DEPTH:
        high = low
    if low > high:
        raise InstanceUnsupportedError(f"minItems {low} > maxItems {high}")
    items: JSONSchema = node.get("items", {})
    count = rng.randint(low, high)
    if not node.get("uniqueItems"):
        return [_generate(items, root, rng, depth + 1) for _ in range(count)]
    unique: dict[str, Any] = {}
    for _ in range(10 * count):
        if len(unique) == count:
            break
        item = _generate(items, root, rng, depth + 1)
        unique.setdefault(json.dumps(item, sort_keys=True), item)
    if len(unique) < low:
        raise InstanceUnsupportedError(f"could not draw {low} distinct items")
    return list(unique.values())


def _bounds(node: JSONSchema, step: float) -> tuple[float | None, float | None]:
    """The inclusive range allowed by minimum/maximum and their exclusive forms (`step` inside those)."""
    low, high = node.get("minimum"), node.get("maximum")
    if isinstance(node.get("exclusiveMinimum"), int | float):
        low = node["exclusiveMinimum"] + step
    if isinstance(node.get("exclusiveMaximum"), int | float):
        high = node["exclusiveMaximum"] - step
    return low, high


def _generate_integer(node: JSONSchema, rng: random.Random) -> int:
    low, high = _bounds(node, 1)
    first = 0 if low is None else math.ceil(low)
    last = first + 10 if high is None else math.floor(high)
    if low is None and high is not None:
        first = last - 10
    if first > last:
        raise InstanceUnsupportedError(f"no integer between {low} and {high}")
    return rng.randint(first, last)


def _generate_number(node: JSONSchema, rng: random.Random) -> float:
    low, high = _bounds(node, 1e-9)
    first = 0.0 if low is None else float(low)
    last = first + 10.0 if high is None else float(high)
    if low is None and high is not None:
        first = last - 10.0
    if first > last:
        raise InstanceUnsupportedError(f"no number between {low} and {high}")
    # Away from the ends, so exclusive bounds hold without float edge cases.
    return first + (last - first) * rng.uniform(0.25, 0.75)


def _generate_string(node: JSONSchema, rng: random.Random) -> str:
    fmt = node.get("format")
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    text = _FORMATS.get(fmt, "") if isinstance(fmt, str) else ""
    text = text or rng.choice(_PHRASES)
    min_length = int(node.get("minLength", 0))
    if len(text) < min_length:
        text += "好" * (min_length - len(text))
    if "maxLength" in node:
        text = text[: int(node["maxLength"])]
    return text


# --- prefix caching ------------------------------------------------------------------------------
