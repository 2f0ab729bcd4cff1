"""Without a progress bar the cache stage logs its progress: tokens, speed, time left."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_cache import make_setup

import autointerp.cache.progress as progress
from autointerp.cache import cache_activations


def test_lines_give_the_tokens_the_speed_and_the_time_left(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    caplog.set_level(logging.INFO, logger="autointerp.cache.progress")
    with progress.token_progress("caching", 1_000_000, enabled=False) as bar:
        for t, n in [(30, 100_000), (60, 100_000), (90, 300_000), (120, 0), (150, 500_000)]:
            clock[0] = t
            bar.advance(n)
    assert [r.getMessage() for r in caplog.records] == [
        # 200,000 tokens in 60 s; 800,000 left at 3,333 tok/s
        "caching: 200,000 of 1,000,000 tokens (20 %), 3,333 tok/s, ~4m00s left",
        # 300,000 tokens in the 60 s since; 500,000 left at 5,000 tok/s
        "caching: 500,000 of 1,000,000 tokens (50 %), 5,000 tok/s, ~1m40s left",
    ]


def test_the_cache_stage_logs_its_progress_without_a_bar(
    tmp_path: Path,
    tiny_model_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    caplog.set_level(logging.INFO, logger="autointerp.cache.progress")
    s = make_setup(tmp_path, tiny_model_dir, **{"cache.hookpoints": ["model.layers.1"]})
    cache_activations(s.config(), progress=False)
    lines = [r.getMessage() for r in caplog.records]
    assert lines and lines[-1].startswith("caching: 1,024 of 1,024 tokens (100 %)")
    assert lines[-1].endswith("~0m00s left")
