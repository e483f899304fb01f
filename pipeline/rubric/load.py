"""Loading a rubric file: YAML → validated Rubric, every problem named by file and criterion, and its JSON schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.errors import RubricError
from pipeline.rubric.conditions import critical_form, operator
from pipeline.rubric.model import Rubric, check_rubric
from pipeline.yamlload import load_yaml, read_yaml_source


def _union_tag(node: Any, path: list[int | str]) -> str | None:
    """The tag pydantic puts into an error location for a hook union member: not a key of the file."""
    if not isinstance(node, dict) or not path:
        return None
    if path[-1] == "when" or (len(path) >= 2 and path[-2] in ("any", "all") and isinstance(path[-1], int)):
        return operator(node)
    if len(path) == 2 and path[0] == "critical":
        return critical_form(node)
    return None


def _locate(data: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into 'criterion greeting › levels[1] › points' or 'caps[0] (greeting) › when'."""
    parts: list[str] = []
    path: list[int | str] = []
    node = data
    tag_skipped = False
    for key in loc:
        if not tag_skipped and key == _union_tag(node, path):
            tag_skipped = True
            continue
        tag_skipped = False
        path.append(key)
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            parts.append(str(key))
            node = None
            continue
        if isinstance(node, dict) and isinstance(key, int) and "id" in node:
            parts.append(f"{'criterion' if 'levels' in node else 'id'} {node['id']}")
        elif isinstance(node, dict) and isinstance(key, int) and len(path) == 2:  # a hook: caps[0] (greeting)
            label = node.get("criterion") or node.get("reason")
            parts[-1] = f"{parts[-1]}[{key}]" + (f" ({label})" if isinstance(label, str) else "")
        else:
            parts.append(f"[{key}]" if isinstance(key, int) else str(key))
    return " › ".join(parts) or "(top level)"


def parse_rubric(data: Any, path: str) -> Rubric:
    """Validate already-parsed YAML data; raise RubricError listing every problem."""
    try:
        rubric = Rubric.model_validate(data)
    except ValidationError as exc:
        problems = [f"{_locate(data, tuple(e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise RubricError(path, problems) from None
    problems = check_rubric(rubric)
    if problems:
        raise RubricError(path, problems)
    return rubric


def load_rubric(path: str | Path) -> Rubric:
    """Load and validate a rubric YAML file."""
    p = Path(path)
    text = read_yaml_source(p)
    try:
        data = load_yaml(text, unique_keys=True)
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.MarkedYAMLError):
            # A str source keeps the quoted line in the message; show the file, not "<unicode string>".
            for mark in (exc.context_mark, exc.problem_mark):
                if mark is not None:
                    mark.name = str(p)
        raise RubricError(str(p), [f"not valid YAML: {exc}"]) from None
    return parse_rubric(data, str(p))


def rubric_json_schema() -> dict[str, Any]:
    """The JSON schema of rubric files, for editors (written to rubric/rubric.schema.json)."""
    schema = Rubric.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kefu-qa rubric"
    return schema
