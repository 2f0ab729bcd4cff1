"""Helpers shared by the LLM tests (imported by name: tests/llm is on sys.path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from fake_server import FakeServer

from autointerp.llm.config import LLMConfig

SECRET = "sk-test-SECRET-do-not-leak-123456"


def fast_config(server: FakeServer, **overrides: object) -> LLMConfig:
    """openai backend against the fake server, with millisecond backoff."""
    fields: dict[str, object] = {
        "model": "openai:gpt-4o-mini",
        "base_url": server.base_url,
        "api_key_env": "FAKE_LLM_KEY",
        "concurrency": 8,
        "timeout_s": 2.0,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 0.05,
        "local_server": False,  # as a remote server (timeouts retried); tests of local set None
    }
    fields.update(overrides)
    return LLMConfig.model_validate(fields)


def build_tiny_llama(path: Path, **kwargs: Any) -> Path:
    """tests/conftest.py's builder (loaded by path: both conftest files are named conftest)."""
    spec = importlib.util.spec_from_file_location(
        "_root_conftest", Path(__file__).resolve().parents[1] / "conftest.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_llama(path, **kwargs)
