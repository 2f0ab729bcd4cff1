"""Worker processes get thread pools sized to their share of the cores (runner/procs.py)."""

from __future__ import annotations

import os

import pytest

from autointerp.runner.procs import THREAD_VARS, worker_threads


def test_worker_threads_share_the_cores_and_restore_the_environment(monkeypatch) -> None:
    for v in THREAD_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    with worker_threads(2):
        assert {os.environ[v] for v in THREAD_VARS} == {"4"}
    assert not any(v in os.environ for v in THREAD_VARS)
    with worker_threads(16):  # more workers than cores: one thread each
        assert os.environ["OMP_NUM_THREADS"] == "1"


def test_worker_threads_keep_what_the_user_set(monkeypatch) -> None:
    for v in THREAD_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with worker_threads(2):
        assert os.environ["POLARS_MAX_THREADS"] == "3"
        assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    assert os.environ["POLARS_MAX_THREADS"] == "3"
    assert "OPENBLAS_NUM_THREADS" not in os.environ


@pytest.mark.parametrize("n", [1, 2])
def test_one_worker_gets_every_core(monkeypatch, n: int) -> None:
    for v in THREAD_VARS:
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    with worker_threads(n):
        assert os.environ["MKL_NUM_THREADS"] == str(2 // n)
