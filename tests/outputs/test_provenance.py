"""The judge note: the endpoint's host only, never a key; the offline model's runs say they are for trying."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeline.outputs.provenance import LOCAL_WARNING, UNCHECKED, endpoint_host, judge_of_run


def run(settings: dict[str, Any], model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "rubric_id": "ecommerce_cs", "rubric_version": "1", "settings": json.dumps(settings)}


def test_an_endpoint_run_names_model_host_rubric_and_that_nobody_checked_it() -> None:
    judge = judge_of_run(run({"base_url": "https://user:pw@llm.example.cn:8443/v1?key=sk-1", "api_key_set": True,
                              "local": False}))
    assert judge.endpoint_host == "llm.example.cn:8443" and judge.vouched_by is None
    assert judge.note == f"评分来源：gpt-4o-mini（llm.example.cn:8443）· 评分表 ecommerce_cs 第1版 · {UNCHECKED}"
    assert judge_of_run(run({"api_key_set": True})).endpoint_host == "api.openai.com"


def test_the_offline_model_says_it_is_for_trying_the_pipeline() -> None:
    for settings in ({"local": True, "base_url": None}, {"base_url": None, "api_key_set": False}):  # old runs
        judge = judge_of_run(run(settings, model="qwen2.5-coder-1.5b"))
        assert judge.local_model and judge.endpoint_host == "本机"
        assert LOCAL_WARNING in judge.note and "不能用来评价客服个人" in judge.note


def test_a_recorded_check_replaces_the_unchecked_mark() -> None:
    judge = judge_of_run(run({"base_url": "http://127.0.0.1:8000/v1", "local": False}),
                         vouched_by="demo 2026-12-07")
    assert UNCHECKED not in judge.note and judge.note.endswith("一致性检验：demo 2026-12-07")


@given(user=st.text(alphabet="abcxyz019", min_size=1), secret=st.text(alphabet="sk-ABC123", min_size=1),
       path=st.text(alphabet="/v1?&=tokn", max_size=12))
def test_no_user_password_path_or_query_reaches_the_host(user: str, secret: str, path: str) -> None:
    host = endpoint_host(f"https://{user}:{secret}@api.example.com{'/' + path if path else ''}")
    assert host == "api.example.com"
