"""Rubrics as data: the Rubric → Dimension → Group → Criterion → Level models and their arithmetic checks.

A rubric file is YAML (loaded by pipeline/rubric/load.py); every problem names the file and the
criterion, so a rubric designer can fix all of them in one pass. Its hooks on the deterministic
checks (caps, critical items) are modelled in pipeline/rubric/conditions.py.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from pipeline.models.strict import StrictModel
from pipeline.rubric.base import ID_PATTERN
from pipeline.rubric.conditions import Cap, Critical, CriticalScore


class Level(StrictModel):
    """One scoring level of a criterion."""

    points: int = Field(description="Points awarded at this level; one of the criterion's allowed scores.")
    description: str = Field(min_length=1, description="What an agent's chat looks like at this level.")
    note: str | None = Field(
        default=None, description="The rubric author's reading, where the source did not state the points."
    )


Speaker = Literal["agent", "customer", "any"]

_NOT_SEEN: dict[str, Any] = {"__all__": {"groups": {"__all__": {"criteria": {"__all__": {"judges"}}}}}}
"""The criterion fields the model never sees, left out of the content hash."""


class Criterion(StrictModel):
    """One gradable item, scored at exactly one of its levels."""

    id: str = Field(pattern=ID_PATTERN, description="Stable ascii id; grades are matched by it, never by name.")
    name: str = Field(min_length=1, description="Display name in the rubric's language, as the source writes it.")
    max: int = Field(gt=0, description="Maximum points; equals the highest level's points.")
    description: str | None = Field(default=None, description="What the criterion is about, if it needs saying.")
    levels: list[Level] = Field(min_length=2, description="The levels, any order; the prompt lists them ascending.")
    note: str | None = Field(default=None, description="The rubric author's reading of the source.")
    judges: Speaker = Field(
        default="agent",
        description="Whose words the criterion judges: a quote cited for it is verified only in that side's turns "
                    "(agent: the human agent's; customer: the customer's; any: every turn).",
    )

    @property
    def points(self) -> list[int]:
        """The allowed scores, ascending."""
        return sorted(level.points for level in self.levels)

    def levels_ascending(self) -> list[Level]:
        """Levels from lowest to highest points."""
        return sorted(self.levels, key=lambda level: level.points)


class Group(StrictModel):
    """A subtotal: a named set of criteria (服务用语, 服务态度, …)."""

    id: str = Field(pattern=ID_PATTERN, description="Stable ascii id.")
    name: str = Field(min_length=1, description="Display name.")
    points: int = Field(gt=0, description="Subtotal; must equal the sum of its criteria's maxima.")
    criteria: list[Criterion] = Field(min_length=1, description="The criteria in this group.")


class Dimension(StrictModel):
    """A top-level part of the rubric (服务亲和力, 营销能力, …)."""

    id: str = Field(pattern=ID_PATTERN, description="Stable ascii id.")
    name: str = Field(min_length=1, description="Display name.")
    points: int = Field(gt=0, description="Dimension total; must equal the sum of its groups' points.")
    groups: list[Group] = Field(min_length=1, description="The groups in this dimension.")


class Rubric(StrictModel):
    """A whole rubric, as loaded from one YAML file."""

    id: str = Field(pattern=ID_PATTERN, description="Stable ascii id of the rubric.")
    version: str = Field(min_length=1, description="Bumped by the author whenever wording or points change.")
    name: str = Field(min_length=1, description="Display name.")
    language: str = Field(default="zh", description="Language of the rubric text; selects the prompt templates.")
    source: str | None = Field(default=None, description="Where the rubric comes from.")
    note: str | None = Field(default=None, description="The author's notes on the rubric as a whole.")
    total: int = Field(gt=0, description="Total points; must equal the sum of the dimensions' points.")
    dimensions: list[Dimension] = Field(min_length=1, description="The dimensions.")
    caps: list[Cap] = Field(default_factory=list, description="Checks that cap a criterion's score.")
    critical: list[Critical] = Field(
        default_factory=list, description="致命项: a low criterion score or a check that fails the whole chat."
    )

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
        """sha256 of the rubric's canonical JSON, hooks excluded: part of every grade's resume key.

        Only what the model sees is hashed; caps and critical items act on stored grades at export, and a
        criterion's `judges` on the quotes' verification when a reply is read.
        """
        content = self.model_dump(mode="json", exclude={"caps": True, "critical": True, "dimensions": _NOT_SEEN})
        canonical = json.dumps(content, ensure_ascii=False, sort_keys=True)
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
    problems.extend(_check_hooks(rubric))
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


def _check_hooks(rubric: Rubric) -> list[str]:
    """Hooks must name criteria of this rubric and points that can change a score."""
    known = {c.id: c for c in rubric.criteria()}
    problems = []
    for i, cap in enumerate(rubric.caps):
        where = f"caps[{i}] ({cap.criterion})"
        crit = known.get(cap.criterion)
        if crit is None:
            problems.append(f"{where}: criterion {cap.criterion!r} is not in the rubric")
        elif cap.cap not in crit.points or cap.cap == crit.max:
            allowed = "/".join(map(str, crit.points[:-1]))
            problems.append(f"{where}: cap {cap.cap} must be a level of {crit.id} below its maximum ({allowed})")
    for i, item in enumerate(rubric.critical):
        if not isinstance(item, CriticalScore):
            continue
        where = f"critical[{i}] ({item.criterion})"
        crit = known.get(item.criterion)
        if crit is None:
            problems.append(f"{where}: criterion {item.criterion!r} is not in the rubric")
        elif not crit.points[0] <= item.at_or_below < crit.max:
            problems.append(f"{where}: at_or_below {item.at_or_below} must lie in {crit.points[0]}..{crit.max - 1}, "
                            f"else it never or always fails the chat")
    return problems
