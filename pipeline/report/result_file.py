"""agreement.json read back: the CheckResult a report wrote, with its NaNs restored."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from pipeline.consistency.results import CheckResult
from pipeline.errors import ConfigError, InputError
from pipeline.grading.fingerprint import JudgeFingerprint
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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(str(path), f"无法读取 agreement.json：{os_problem(exc)} (cannot read it)") from None
    except UnicodeDecodeError as exc:
        raise InputError(str(path), f"agreement.json {utf8_problem(exc)}") from None
    except (json.JSONDecodeError, RecursionError) as exc:  # RecursionError: nested thousands deep
        raise InputError(str(path), f"agreement.json 不是有效的 JSON：{exc} (not valid JSON)") from None


def load_judge(check_dir: Path) -> JudgeFingerprint:
    """The judge a check measured, for `kefu grade --checked-by`.

    Read before the rest of agreement.json is validated: a check made before fingerprints were recorded
    must be refused for that reason, plainly, whatever else its layout lacks.
    """
    path = check_dir / AGREEMENT_JSON
    if not path.is_file():
        raise InputError(str(check_dir), f"不是检查文件夹：其中没有 {AGREEMENT_JSON}（由 kefu check 生成） "
                                         f"(not a check folder: no {AGREEMENT_JSON})")
    data = _read_json(path)
    if not isinstance(data, dict):
        raise InputError(str(path), "不是 agreement.json：内容不是 JSON 对象 (not a JSON object)")
    if (judge := data.get("judge")) is None:
        raise ConfigError(
            f"检查 {check_dir} 没有记录评判模型指纹（它做于 kefu 记录指纹之前），"
            "无法确认本次评分的评判模型就是它测过的，拒绝评分。"
            "要生成指纹，请用同样的模型、端点、评分表和采样设置重新运行 kefu check"
            "（用同一个 --out 文件夹时会重用已存的评分，不再发请求），"
            "再用 --checked-by 指向它 "
            "(the check has no judge fingerprint: rerun `kefu check` to make one)"
        )
    try:
        return JudgeFingerprint.model_validate(judge)
    except ValidationError as exc:
        raise InputError(str(path), f"评判模型指纹无法读取 (unreadable judge fingerprint): "
                                    f"{exc.errors()[0]['msg']}") from None


def load_result(path: Path) -> CheckResult:
    """Read an agreement.json written by `write_report`, with its NaNs restored."""
    data = _read_json(path)
    try:
        return CheckResult.model_validate(_restore_nan(CheckResult, data))
    except ValidationError as exc:
        raise InputError(str(path), "不是这个版本的 agreement.json (not an agreement.json of this version)："
                                    f"{exc.errors()[0]['msg']}") from None
