"""Rubrics as data: the Rubric → Dimension → Group → Criterion → Level models, loading and validation.

A rubric file is YAML; it is validated with pydantic on load and every problem names the file
and the criterion, so a rubric designer can fix all of them in one pass.

A rubric may also declare hooks on the deterministic checks (pipeline/checks/checker.py): `caps` lower a
criterion's score when a condition holds, `critical` items (致命项) fail the whole chat. Hooks
are applied to stored grades at export time (pipeline/rubric/hooks.py), so they are not part of
`content_hash`: changing a hook never re-grades a chat.

The condition language, one operator per condition:
  {check: max_wait_s, above: 600}        number checks: above (>), at_least (>=), below (<), at_most (<=)
  {check: greeting_found, is: false}     flag checks; a reason check (timing_not_measurable) `is: true`
                                          when the reason is present
  {check: first_reply_status, equals: no_human_reply}   choice checks
  {any: [cond, ...]} / {all: [cond, ...]}
A condition on a value that could not be measured (an empty cell) does not hold, except
`is: false` on a reason check, which holds exactly when there is no reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    JsonValue,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from pipeline.errors import RubricError
from pipeline.models.checks import CHECKS, CheckKind, ColumnValue
from pipeline.models.strict import StrictModel
from pipeline.oserrors import os_problem
from pipeline.yamlload import load_yaml

_ID_PATTERN = r"^[a-z][a-z0-9_]*$"


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

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id; grades are matched by it, never by name.")
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

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id.")
    name: str = Field(min_length=1, description="Display name.")
    points: int = Field(gt=0, description="Subtotal; must equal the sum of its criteria's maxima.")
    criteria: list[Criterion] = Field(min_length=1, description="The criteria in this group.")


class Dimension(StrictModel):
    """A top-level part of the rubric (服务亲和力, 营销能力, …)."""

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id.")
    name: str = Field(min_length=1, description="Display name.")
    points: int = Field(gt=0, description="Dimension total; must equal the sum of its groups' points.")
    groups: list[Group] = Field(min_length=1, description="The groups in this dimension.")


def _check_names(*kinds: CheckKind) -> list[str]:
    return [name for name, spec in CHECKS.items() if spec.kind in kinds]


class _Comparison(StrictModel):
    """A condition on one check column; subclasses say which kinds of column they can compare."""

    kinds: ClassVar[tuple[CheckKind, ...]]
    check: str = Field(description="A check column of scores.csv (pipeline/checks/checker.py CHECKS).")

    @field_validator("check")
    @classmethod
    def _known_check(cls, name: str) -> str:
        spec = CHECKS.get(name)
        if spec is None:
            raise ValueError(f"unknown check {name!r}; this comparison can test: {', '.join(_check_names(*cls.kinds))}")
        if spec.kind not in cls.kinds:
            usable = ", ".join(_check_names(*cls.kinds))
            raise ValueError(f"check {name!r} holds a {spec.kind.value}, which this comparison cannot test; "
                             f"it can test: {usable}")
        return name

    @staticmethod
    def _number(checks: Mapping[str, ColumnValue], name: str) -> float | None:
        value = checks.get(name)
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _check_field(*kinds: CheckKind) -> Any:
    names: list[JsonValue] = list(_check_names(*kinds))
    return Field(description="The check column compared.", json_schema_extra={"enum": names})


class Above(_Comparison):
    """Holds when the number is greater than `above`."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    above: float = Field(description="Strict lower bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value > self.above


class AtLeast(_Comparison):
    """Holds when the number is `at_least` or more."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    at_least: float = Field(description="Inclusive lower bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value >= self.at_least


class Below(_Comparison):
    """Holds when the number is less than `below`."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    below: float = Field(description="Strict upper bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value < self.below


class AtMost(_Comparison):
    """Holds when the number is `at_most` or less."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    at_most: float = Field(description="Inclusive upper bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value <= self.at_most


class Is(_Comparison):
    """Holds when a flag is `is`; for a reason check, `is: true` means a reason is present."""

    # Dumps say `is` too, so that a rubric dumped without by_alias still loads.
    model_config = ConfigDict(extra="forbid", frozen=True, serialize_by_alias=True)

    kinds = (CheckKind.flag, CheckKind.reason)
    check: str = _check_field(CheckKind.flag, CheckKind.reason)
    is_: bool = Field(alias="is", description="The flag value that makes the condition hold.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = checks.get(self.check)
        if CHECKS[self.check].kind is CheckKind.reason:
            return (value is not None) == self.is_
        return isinstance(value, bool) and value == self.is_


class Equals(_Comparison):
    """Holds when a choice check holds exactly the word `equals`."""

    kinds = (CheckKind.choice,)
    check: str = _check_field(CheckKind.choice)
    equals: str = Field(description="One of the check's words (e.g. first_reply_status: no_human_reply).")

    @field_validator("equals")
    @classmethod
    def _known_choice(cls, word: str, info: ValidationInfo) -> str:
        spec = CHECKS.get(info.data.get("check", ""))
        if spec is not None and word not in spec.choices:
            raise ValueError(f"{word!r} is not a value of {info.data['check']}; it holds one of: "
                             + ", ".join(spec.choices))
        return word

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        return checks.get(self.check) == self.equals


class AnyOf(StrictModel):
    """Holds when at least one of its conditions holds."""

    any: list[Condition] = Field(min_length=1, description="The alternatives.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        return any(c.holds(checks) for c in self.any)


class AllOf(StrictModel):
    """Holds when every one of its conditions holds."""

    all: list[Condition] = Field(min_length=1, description="The conditions that must all hold.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        return all(c.holds(checks) for c in self.all)


_OPERATORS = {"above": Above, "at_least": AtLeast, "below": Below, "at_most": AtMost, "is": Is, "equals": Equals,
              "any": AnyOf, "all": AllOf}


def _operator(value: Any) -> str | None:
    """The condition's one operator key, or None (reported as an error) for none or several."""
    if isinstance(value, dict):
        found = [key for key in _OPERATORS if key in value]
        return found[0] if len(found) == 1 else None
    return next((key for key, cls in _OPERATORS.items() if type(value) is cls), None)


Condition = Annotated[
    Annotated[Above, Tag("above")] | Annotated[AtLeast, Tag("at_least")] | Annotated[Below, Tag("below")]
    | Annotated[AtMost, Tag("at_most")] | Annotated[Is, Tag("is")] | Annotated[Equals, Tag("equals")]
    | Annotated[AnyOf, Tag("any")] | Annotated[AllOf, Tag("all")],
    Discriminator(
        _operator,
        custom_error_type="condition",
        custom_error_message="a condition needs exactly one of: " + ", ".join(_OPERATORS),
    ),
]
"""A condition on a chat's checks (the language is in the module docstring)."""


class Cap(StrictModel):
    """When the condition holds, the criterion's score is at most `cap` (the LLM's own score is kept too)."""

    criterion: str = Field(pattern=_ID_PATTERN, description="The criterion capped.")
    cap: int = Field(ge=0, description="The highest score allowed; one of the criterion's level points.")
    when: Condition = Field(description="When the cap applies.")
    reason: str = Field(min_length=1, description="Shown in scores.csv `adjustments`, e.g. 10分钟内无人工回复.")
    note: str | None = Field(default=None, description="The seed rule the hook comes from.")


class CriticalScore(StrictModel):
    """A 致命项 on the LLM's score: the chat fails (total 0) when the criterion scores `at_or_below` or less."""

    criterion: str = Field(pattern=_ID_PATTERN, description="The criterion whose LLM score is read.")
    at_or_below: int = Field(ge=0, description="The chat fails when the LLM's score is this or less.")
    reason: str = Field(min_length=1, description="Shown in scores.csv `adjustments`, e.g. 态度粗鲁/与顾客争执.")
    note: str | None = Field(default=None, description="The seed rule the hook comes from.")


class CriticalCheck(StrictModel):
    """A 致命项 on the checks: the chat fails (total 0) when the condition holds."""

    when: Condition = Field(description="When the chat fails.")
    reason: str = Field(min_length=1, description="Shown in scores.csv `adjustments`.")
    note: str | None = Field(default=None, description="The seed rule the hook comes from.")


def _critical_form(value: Any) -> str | None:
    if isinstance(value, dict):
        forms = [key for key in ("criterion", "when") if key in value]
        return forms[0] if len(forms) == 1 else None
    return "criterion" if isinstance(value, CriticalScore) else "when" if isinstance(value, CriticalCheck) else None


Critical = Annotated[
    Annotated[CriticalScore, Tag("criterion")] | Annotated[CriticalCheck, Tag("when")],
    Discriminator(
        _critical_form,
        custom_error_type="critical",
        custom_error_message="a critical item has either `criterion` with `at_or_below`, or `when`",
    ),
]


class Rubric(StrictModel):
    """A whole rubric, as loaded from one YAML file."""

    id: str = Field(pattern=_ID_PATTERN, description="Stable ascii id of the rubric.")
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


def _union_tag(node: Any, path: list[int | str]) -> str | None:
    """The tag pydantic puts into an error location for a hook union member: not a key of the file."""
    if not isinstance(node, dict) or not path:
        return None
    if path[-1] == "when" or (len(path) >= 2 and path[-2] in ("any", "all") and isinstance(path[-1], int)):
        return _operator(node)
    if len(path) == 2 and path[0] == "critical":
        return _critical_form(node)
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
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise RubricError(str(p), [f"无法读取 (cannot read)：{os_problem(exc)}"]) from None
    except UnicodeDecodeError as exc:
        raise RubricError(str(p), [f"not UTF-8: byte {exc.start} cannot be decoded"]) from None
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
