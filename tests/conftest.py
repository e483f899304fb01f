"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings

from pipeline.mockserver import MockServer
from pipeline.transcripts import Role, Transcript, Turn


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 with default settings; change its attributes freely."""
    with MockServer() as server:
        yield server


PII_VALUES = {
    "mobile": "13812345678",
    "email": "zs@example.org",
    "id_card": "11010519491231002X",
    "bank_card": "6222021234567890128",
    "landline": "0571-88888888",
    "address": "浙江省杭州市西湖区文三路90号东部软件园3号楼501室",
}
"""One value of each kind `pipeline.redaction` finds, as `pii_everywhere` spreads them."""


@pytest.fixture
def pii_values() -> dict[str, str]:
    """The values `pii_everywhere` holds, by kind: none may reach an endpoint when redaction is on."""
    return dict(PII_VALUES)


@pytest.fixture
def pii_everywhere() -> Transcript:
    """A chat with personal data in every text field: id, platform, shop, agent id, each turn's text and speaker."""
    v = PII_VALUES
    t0 = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)
    return Transcript(
        id=f"pii-{v['mobile']}", platform=f"抖音 {v['landline']}", shop=f"张三的店 {v['mobile']} {v['email']}",
        agent_id=f"kf-{v['email']}",
        turns=[
            Turn(role=Role.customer, speaker=f"买家{v['mobile']}", time=t0,
                 text=f"寄到{v['address']}，身份证{v['id_card']}"),
            Turn(role=Role.agent, speaker=f"客服 {v['landline']}", time=t0 + timedelta(seconds=30),
                 text=f"亲，您好，退款到卡{v['bank_card']}，邮件发{v['email']}"),
        ],
    )


# Hypothesis budgets: "ci" (the default) keeps the property tests to seconds; "bench" is the long fuzz run,
# HYPOTHESIS_PROFILE=bench pytest -q tests/test_transcripts_properties.py (README, Development).
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("bench", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
