"""The grading job's choices: when personal data is redacted before anything leaves the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.grading.endpoints import ResolvedEndpoint
from pipeline.grading.job import GradeJob, should_redact
from pipeline.llm.client import Endpoint


def endpoint(base_url: str | None) -> ResolvedEndpoint:
    return ResolvedEndpoint(Endpoint(base_url, None), "m", local=False)


@pytest.mark.parametrize(
    ("base_url", "redact"),
    [
        (None, True),  # the SDK's default: api.openai.com
        ("https://api.deepseek.com/v1", True),
        ("http://10.0.0.5:8000/v1", True),  # another machine on the LAN is still another machine
        ("http://127.0.0.1:8000/v1", False),
        ("http://localhost:11434/v1", False),
        ("http://[::1]:8080/v1", False),
    ],
)
def test_redaction_is_on_unless_the_endpoint_is_this_machine(base_url: str | None, redact: bool) -> None:
    job = GradeJob(inputs=[], rubric_path=Path("r.yaml"), out_dir=Path("out"))
    assert should_redact(job, endpoint(base_url)) is redact


@pytest.mark.parametrize("forced", [True, False])
def test_the_flag_forces_redaction_either_way(forced: bool) -> None:
    job = GradeJob(inputs=[], rubric_path=Path("r.yaml"), out_dir=Path("out"), redact=forced)
    assert should_redact(job, endpoint("http://127.0.0.1:8000/v1")) is forced
    assert should_redact(job, endpoint("https://api.openai.com/v1")) is forced


def test_the_embedded_model_is_this_machine_before_its_server_has_a_url() -> None:
    # Its server starts on the first request (Endpoint.serve), so the job decides with no base URL yet.
    job = GradeJob(inputs=[], rubric_path=Path("r.yaml"), out_dir=Path("out"))
    local = ResolvedEndpoint(Endpoint(None, None, serve=lambda: "http://127.0.0.1:1/v1"), "m", local=True)
    assert should_redact(job, local) is False
