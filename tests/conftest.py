"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.mockserver import MockServer


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 with default settings; change its attributes freely."""
    with MockServer() as server:
        yield server


@pytest.fixture(autouse=True)
def learned_limits_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Rate limits learned by a test run (pipeline.learned_limits) go to a file of the test's own, never the
    user's cache (the CLI helpers pass KEFU_LIMITS_FILE on to the commands they start)."""
    path = tmp_path_factory.mktemp("limits") / "rate_limits.json"
    monkeypatch.setenv("KEFU_LIMITS_FILE", str(path))
    return path
