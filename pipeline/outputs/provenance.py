"""Which judge made a run's grades, and whether a check vouches for it: the note every output carries.

Read from the run record (model, endpoint, rubric id and version); never a key, and of the endpoint
only its host. `vouched_by` stays None — shown as 未经一致性检验 — until a recorded agreement check
of the same judge fills it (the check's own module decides how it recognises the judge). A run of
the embedded offline model says it is for trying the pipeline, not for grading people.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field

JUDGE_FILE = "judge.json"
UNCHECKED = "未经一致性检验"
LOCAL_WARNING = "内置离线小模型，仅供试用流程，不能用来评价客服个人"
OPENAI_HOST = "api.openai.com"


class JudgeProvenance(BaseModel):
    """The judge behind a run's grades (written as OUT/judge.json)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(description="The model name as the endpoint knows it.")
    endpoint_host: str = Field(description="Host (and port) of the endpoint; no scheme, path, user or key.")
    local_model: bool = Field(description="True when the embedded offline model graded.")
    rubric_id: str = Field(description="The rubric's id.")
    rubric_version: str = Field(description="The rubric's version.")
    vouched_by: str | None = Field(default=None, description="The agreement check that vouches for this judge; "
                                                             "None: no check is recorded.")
    note: str = Field(description="The one line people read, in Chinese.")


def endpoint_host(base_url: str | None) -> str:
    """The host[:port] of an endpoint URL; the OpenAI API when none was set."""
    if not base_url:
        return OPENAI_HOST
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    return f"{host}:{parts.port}" if parts.port else host


def judge_of_run(run: dict[str, Any], *, vouched_by: str | None = None) -> JudgeProvenance:
    """The judge of a run row (`Store.last_run()`); older runs without `local` in their settings count
    as the offline model when they had neither an endpoint nor a key."""
    settings = json.loads(run["settings"])
    base_url = settings.get("base_url")
    local = settings.get("local", base_url is None and not settings.get("api_key_set", False))
    host = "本机" if local else endpoint_host(base_url)
    verdict = LOCAL_WARNING if local else (f"一致性检验：{vouched_by}" if vouched_by else UNCHECKED)
    note = f"评分来源：{run['model']}（{host}）· 评分表 {run['rubric_id']} 第{run['rubric_version']}版 · {verdict}"
    return JudgeProvenance(model=run["model"], endpoint_host=host, local_model=local, rubric_id=run["rubric_id"],
                           rubric_version=run["rubric_version"], vouched_by=vouched_by, note=note)


def write_judge_file(judge: JudgeProvenance, out_dir: Path) -> Path:
    """Write OUT/judge.json, the run-level note beside scores.csv and grades.jsonl."""
    path = out_dir / JUDGE_FILE
    path.write_text(judge.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return path
