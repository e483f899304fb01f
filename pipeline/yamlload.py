"""YAML text → data for rubrics and lexicons: libyaml's parser where PyYAML has it, PyYAML's for errors.

Every run reads the rubric and the lexicons before its first request; libyaml parses them about ten
times faster (rubric/ecommerce_cs.yaml: 53 ms → 4.5 ms here). The constructors and the resolver are
PyYAML's safe ones either way, so the data is the same. A text libyaml rejects is parsed again by
PyYAML's own parser, whose error quotes the offending line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import RubricError
from pipeline.oserrors import os_problem, utf8_problem


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    """A mapping that rejects a repeated key: PyYAML would silently keep the last one, so a rubric with
    two `points:` under one level would load with the wrong score."""
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):
            continue  # construct_mapping below reports an unhashable key itself
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    return loader.construct_mapping(node)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader with unique mapping keys."""


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)

_FAST: dict[bool, type[Any]] = {}
if yaml.__with_libyaml__:

    class _CUniqueKeyLoader(yaml.CSafeLoader):
        """CSafeLoader with unique mapping keys."""

    _CUniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
    _FAST = {False: yaml.CSafeLoader, True: _CUniqueKeyLoader}


def load_yaml(text: str, *, unique_keys: bool = False) -> Any:
    """`yaml.safe_load(text)`, faster; with `unique_keys`, a repeated mapping key is an error.

    Raises yaml.YAMLError, from PyYAML's own parser (its messages quote the offending line).
    """
    fast = _FAST.get(unique_keys)
    if fast is not None:
        with contextlib.suppress(yaml.YAMLError):
            return yaml.load(text, Loader=fast)  # a CSafeLoader: safe constructors only
    return yaml.load(text, Loader=_UniqueKeyLoader if unique_keys else yaml.SafeLoader)


def read_yaml_source(path: Path) -> str:
    """A rubric or lexicon file's text; a file that cannot be read or is not UTF-8 is a RubricError naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(str(path), [f"无法读取 (cannot read)：{os_problem(exc)}"]) from None
    except UnicodeDecodeError as exc:
        raise RubricError(str(path), [utf8_problem(exc)]) from None
