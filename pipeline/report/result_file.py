"""agreement.json read back: the CheckResult a report wrote, with its NaNs restored."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pipeline.consistency.results import CheckResult
from pipeline.errors import InputError
from pipeline.oserrors import os_problem, utf8_problem

AGREEMENT_JSON = "agreement.json"


def _restore_nan(annotation: Any, value: Any) -> Any:
    """JSON has no NaN, so agreement.json writes null; read null back as NaN where the field is a float."""
    if value is None:
        return math.nan if annotation is float else None
    origin = get_origin(annotation)
    if origin in (Union, UnionType):
        options = [a for a in get_args(annotation) if a is not type(None)]
        return _restore_nan(options[0], value) if len(options) == 1 else value
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(value, dict):
        fields = annotation.model_fields
        return {k: _restore_nan(fields[k].annotation, v) if k in fields else v for k, v in value.items()}
    if origin is list and isinstance(value, list):
        return [_restore_nan(get_args(annotation)[0], v) for v in value]
    if origin is dict and isinstance(value, dict):
        return {k: _restore_nan(get_args(annotation)[1], v) for k, v in value.items()}
    return value


def load_result(path: Path) -> CheckResult:
    """Read an agreement.json written by `write_report`, with its NaNs restored."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(str(path), f"无法读取 agreement.json：{os_problem(exc)} (cannot read it)") from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"agreement.json {utf8_problem(exc)}") from None
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise InputError(str(path), f"agreement.json 不是有效的 JSON：{exc} (not valid JSON)") from None
    try:
        return CheckResult.model_validate(_restore_nan(CheckResult, data))
    except ValidationError as exc:
        raise InputError(str(path), f"not an agreement.json of this version: {exc.errors()[0]['msg']}") from None
