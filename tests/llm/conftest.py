"""Fixtures of the LLM tests: the fake OpenAI-compatible server and the API key."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_server import FakeServer
from llm_helpers import SECRET


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    return SECRET
