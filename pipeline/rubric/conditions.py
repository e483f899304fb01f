"""Hook models: the conditions on a chat's checks, and the caps and critical items (致命项) built on them.

A rubric may declare hooks on the deterministic checks (pipeline/checks/checker.py): `caps` lower a
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

from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import ConfigDict, Discriminator, Field, JsonValue, Tag, ValidationInfo, field_validator

from pipeline.models.checks import CHECKS, CheckKind, ColumnValue
from pipeline.models.strict import StrictModel
from pipeline.rubric.base import ID_PATTERN

if TYPE_CHECKING:  # numpy and pandas are loaded by the first `mask`: grading never needs them
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    BoolArray = NDArray[np.bool_]


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


def _values(checks: pd.DataFrame, name: str) -> pd.Series:
    """A check column of many chats; all missing when the frame does not have it."""
    import pandas as pd

    return checks[name] if name in checks else pd.Series(None, index=checks.index, dtype=object)


def _numbers(checks: pd.DataFrame, name: str) -> NDArray[np.float64]:
    """A number check column as floats, NaN where it was not measured (every comparison with NaN is False)."""
    import pandas as pd

    values = _values(checks, name)
    if values.dtype.kind in "iuf":
        return values.to_numpy(dtype=float)
    numbers = values.where(values.map(lambda v: isinstance(v, int | float) and not isinstance(v, bool)))
    return pd.to_numeric(numbers, errors="coerce").to_numpy(dtype=float)


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

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once: one check column per frame column (missing: no chat has it)."""
        return _numbers(checks, self.check) > self.above


class AtLeast(_Comparison):
    """Holds when the number is `at_least` or more."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    at_least: float = Field(description="Inclusive lower bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value >= self.at_least

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once: one check column per frame column (missing: no chat has it)."""
        return _numbers(checks, self.check) >= self.at_least


class Below(_Comparison):
    """Holds when the number is less than `below`."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    below: float = Field(description="Strict upper bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value < self.below

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once: one check column per frame column (missing: no chat has it)."""
        return _numbers(checks, self.check) < self.below


class AtMost(_Comparison):
    """Holds when the number is `at_most` or less."""

    kinds = (CheckKind.number,)
    check: str = _check_field(CheckKind.number)
    at_most: float = Field(description="Inclusive upper bound.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        value = self._number(checks, self.check)
        return value is not None and value <= self.at_most

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once: one check column per frame column (missing: no chat has it)."""
        return _numbers(checks, self.check) <= self.at_most


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

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once."""
        values = _values(checks, self.check)
        if CHECKS[self.check].kind is CheckKind.reason:
            present: BoolArray = values.notna().to_numpy()
            return present if self.is_ else ~present
        if values.dtype == bool:
            flags: BoolArray = values.to_numpy()
            return flags if self.is_ else ~flags
        import numpy as np

        return np.array([isinstance(v, bool) and v == self.is_ for v in values], dtype=bool)


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

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once."""
        return (_values(checks, self.check) == self.equals).to_numpy(dtype=bool)


class AnyOf(StrictModel):
    """Holds when at least one of its conditions holds."""

    any: list[Condition] = Field(min_length=1, description="The alternatives.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        return any(c.holds(checks) for c in self.any)

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once."""
        import numpy as np

        held: BoolArray = np.logical_or.reduce([c.mask(checks) for c in self.any])
        return held


class AllOf(StrictModel):
    """Holds when every one of its conditions holds."""

    all: list[Condition] = Field(min_length=1, description="The conditions that must all hold.")

    def holds(self, checks: Mapping[str, ColumnValue]) -> bool:
        """Whether the condition holds for one chat's checks."""
        return all(c.holds(checks) for c in self.all)

    def mask(self, checks: pd.DataFrame) -> BoolArray:
        """`holds` for many chats at once."""
        import numpy as np

        held: BoolArray = np.logical_and.reduce([c.mask(checks) for c in self.all])
        return held


_OPERATORS = {"above": Above, "at_least": AtLeast, "below": Below, "at_most": AtMost, "is": Is, "equals": Equals,
              "any": AnyOf, "all": AllOf}


def operator(value: Any) -> str | None:
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
        operator,
        custom_error_type="condition",
        custom_error_message="a condition needs exactly one of: " + ", ".join(_OPERATORS),
    ),
]
"""A condition on a chat's checks (the language is in the module docstring)."""


class Cap(StrictModel):
    """When the condition holds, the criterion's score is at most `cap` (the LLM's own score is kept too)."""

    criterion: str = Field(pattern=ID_PATTERN, description="The criterion capped.")
    cap: int = Field(ge=0, description="The highest score allowed; one of the criterion's level points.")
    when: Condition = Field(description="When the cap applies.")
    reason: str = Field(min_length=1, description="Shown in scores.csv `adjustments`, e.g. 10分钟内无人工回复.")
    note: str | None = Field(default=None, description="The seed rule the hook comes from.")


class CriticalScore(StrictModel):
    """A 致命项 on the LLM's score: the chat fails (total 0) when the criterion scores `at_or_below` or less."""

    criterion: str = Field(pattern=ID_PATTERN, description="The criterion whose LLM score is read.")
    at_or_below: int = Field(ge=0, description="The chat fails when the LLM's score is this or less.")
    reason: str = Field(min_length=1, description="Shown in scores.csv `adjustments`, e.g. 态度粗鲁/与顾客争执.")
    note: str | None = Field(default=None, description="The seed rule the hook comes from.")


class CriticalCheck(StrictModel):
    """A 致命项 on the checks: the chat fails (total 0) when the condition holds."""

    when: Condition = Field(description="When the chat fails.")
    reason: str = Field(min_length=1, description="Shown in scores.csv `adjustments`.")
    note: str | None = Field(default=None, description="The seed rule the hook comes from.")


def critical_form(value: Any) -> str | None:
    if isinstance(value, dict):
        forms = [key for key in ("criterion", "when") if key in value]
        return forms[0] if len(forms) == 1 else None
    return "criterion" if isinstance(value, CriticalScore) else "when" if isinstance(value, CriticalCheck) else None


Critical = Annotated[
    Annotated[CriticalScore, Tag("criterion")] | Annotated[CriticalCheck, Tag("when")],
    Discriminator(
        critical_form,
        custom_error_type="critical",
        custom_error_message="a critical item has either `criterion` with `at_or_below`, or `when`",
    ),
]
