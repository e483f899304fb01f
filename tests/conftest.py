"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pipeline.mockserver import MockServer


@pytest.fixture
def mock_server() -> Iterator[MockServer]:
    """A fresh OpenAI-compatible server on 127.0.0.1 with default settings; change its attributes freely."""
    with MockServer() as server:
        yield server
