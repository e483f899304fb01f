"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from pipeline.mockserver import MockServer


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 with default settings; change its attributes freely."""
    with MockServer() as server:
        yield server


# Hypothesis budgets: "ci" (the default) keeps the property tests to seconds; "bench" is the long fuzz run,
# HYPOTHESIS_PROFILE=bench pytest -q tests/test_transcripts_properties.py (README, Development).
settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("bench", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
