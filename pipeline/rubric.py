"""Rubrics as data: the Rubric → Dimension → Group → Criterion → Level models, loading and validation.

A rubric file is YAML; it is validated with pydantic on load and every problem names the file
and the criterion, so a rubric designer can fix all of them in one pass.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import RubricError

_ID_PATTERN = r"^[a-z][a-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Level(_Strict):
    """One scoring level of a criterion."""

    points: int = Field(description="Points awarded at this level; one of the criterion's allowed scores.")
    description: str = Field(min_length=1, description="What an agent's chat looks like at this level.")
    note: str | None = Field(
        default=None, description="The rubric author's reading, where the source did not state the points."
    )


class Criterion(_Strict):
    """One gradable item, scored at exactly one of its levels."""

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id; grades are matched by it, never by name.")
    name: str = Field(min_length=1, description="Display name in the rubric's language, as the source writes it.")
    max: int = Field(gt=0, description="Maximum points; equals the highest level's points.")
    description: str | None = Field(default=None, description="What the criterion is about, if it needs saying.")
    levels: list[Level] = Field(min_length=2, description="The levels, any order; the prompt lists them ascending.")
    note: str | None = Field(default=None, description="The rubric author's reading of the source.")

    @property
    def points(self) -> list[int]:
        """The allowed scores, ascending."""
        return sorted(level.points for level in self.levels)

    def levels_ascending(self) -> list[Level]:
        """Levels from lowest to highest points."""
        return sorted(self.levels, key=lambda level: level.points)


class Group(_Strict):
    """A subtotal: a named set of criteria (服务用语, 服务态度, …)."""

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id.")
    name: str = Field(min_length=1, description="Display name.")
    points: int = Field(gt=0, description="Subtotal; must equal the sum of its criteria's maxima.")
    criteria: list[Criterion] = Field(min_length=1, description="The criteria in this group.")


class Dimension(_Strict):
    """A top-level part of the rubric (服务亲和力, 营销能力, …)."""

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id.")
    name: str = Field(min_length=1, description="Display name.")
    points: int = Field(gt=0, description="Dimension total; must equal the sum of its groups' points.")
    groups: list[Group] = Field(min_length=1, description="The groups in this dimension.")


class Rubric(_Strict):
    """A whole rubric, as loaded from one YAML file."""

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id of the rubric.")
    version: str = Field(min_length=1, description="Bumped by the author whenever wording or points change.")
    name: str = Field(min_length=1, description="Display name.")
    language: str = Field(default="zh", description="Language of the rubric text; selects the prompt templates.")
    source: str | None = Field(default=None, description="Where the rubric comes from.")
    note: str | None = Field(default=None, description="The author's notes on the rubric as a whole.")
    total: int = Field(gt=0, description="Total points; must equal the sum of the dimensions' points.")
    dimensions: list[Dimension] = Field(min_length=1, description="The dimensions.")

    def criteria(self) -> list[Criterion]:
        """Every criterion, in rubric order."""
        return [c for d in self.dimensions for g in d.groups for c in g.criteria]

    def criterion(self, criterion_id: str) -> Criterion:
        """The criterion with this id (KeyError if there is none)."""
        for c in self.criteria():
            if c.id == criterion_id:
                return c
        raise KeyError(criterion_id)

    def walk(self) -> Iterator[tuple[Dimension, Group, Criterion]]:
        """Every criterion with its dimension and group."""
        for d in self.dimensions:
            for g in d.groups:
                for c in g.criteria:
                    yield d, g, c

    @property
    def content_hash(self) -> str:
        """sha256 of the rubric's canonical JSON: part of every grade's resume key."""
        canonical = json.dumps(self.model_dump(mode="json"), ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def check_rubric(rubric: Rubric) -> list[str]:
    """Every arithmetic and identity problem in a parsed rubric, each naming its criterion or group."""
    problems: list[str] = []
    ids = [rubric.id]
    for d in rubric.dimensions:
        ids.append(d.id)
        group_sum = sum(g.points for g in d.groups)
        if group_sum != d.points:
            parts = " + ".join(f"{g.id} {g.points}" for g in d.groups)
            problems.append(
                f"dimension {d.id} ({d.name}) is {d.points} points but its groups add up to {group_sum}: "
                + parts
            )
        for g in d.groups:
            ids.append(g.id)
            crit_sum = sum(c.max for c in g.criteria)
            if crit_sum != g.points:
                parts = " + ".join(f"{c.id} {c.max}" for c in g.criteria)
                problems.append(
                    f"group {g.id} ({g.name}) is {g.points} points but its criteria add up to {crit_sum}: "
                    + parts
                )
            for c in g.criteria:
                ids.append(c.id)
                problems.extend(_check_criterion(c))
    dim_sum = sum(d.points for d in rubric.dimensions)
    if dim_sum != rubric.total:
        parts = " + ".join(f"{d.id} {d.points}" for d in rubric.dimensions)
        problems.append(f"rubric total is {rubric.total} but its dimensions add up to {dim_sum}: {parts}")
    for dup, count in Counter(ids).items():
        if count > 1:
            problems.append(f"id {dup!r} is used {count} times; ids must be unique")
    return problems


def _check_criterion(c: Criterion) -> list[str]:
    where = f"criterion {c.id} ({c.name})"
    problems = []
    points = [level.points for level in c.levels]
    for p in points:
        if not 0 <= p <= c.max:
            problems.append(f"{where}: level points {p} is outside 0..{c.max}")
    for dup, count in Counter(points).items():
        if count > 1:
            problems.append(f"{where}: level points {dup} appears {count} times; levels must be distinct")
    if max(points) != c.max:
        problems.append(f"{where}: highest level is {max(points)} but the criterion's maximum is {c.max}")
    return problems


def _locate(data: Any, loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into 'criterion greeting › levels[1] › points'."""
    parts: list[str] = []
    node = data
    for key in loc:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            parts.append(str(key))
            node = None
            continue
        if isinstance(node, dict) and isinstance(key, int) and "id" in node:
            parts.append(f"{'criterion' if 'levels' in node else 'id'} {node['id']}")
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a repeated mapping key: PyYAML would silently keep the last one,
    so a rubric with two `points:` under one level would load with the wrong score."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
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


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_rubric(path: str | Path) -> Rubric:
    """Load and validate a rubric YAML file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(str(p), [f"cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise RubricError(str(p), [f"not UTF-8: byte {exc.start} cannot be decoded"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass, so still safe
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
