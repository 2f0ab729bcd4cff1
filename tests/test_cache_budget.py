"""The cache's memory budget: chunk sizes follow it, the bytes do not; too small is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_cache import make_setup
from test_cache_resume import snapshot
from typer.main import get_group

import autointerp.cache.run as run_module
import autointerp.cache.writer as writer_module
from autointerp.cache import CacheBudgetError, cache_activations
from autointerp.cache.budget import FORWARD_BYTES_PER_NONZERO, GB, TOKEN_BYTES, plan_memory
from autointerp.cache.run import recorded_chunk_windows
from autointerp.cli import app
from autointerp.config import CacheConfig


def test_plan_memory_sizes_chunks_in_bytes() -> None:
    cc = CacheConfig(ctx_len=256, batch_size=32, max_memory_gb=4.0)
    per_window = 255 * 128.0  # a Gemma Scope-like L0
    big = plan_memory(cc, per_window, n_windows=10**6, fixed_bytes=1 * GB)
    assert big.chunk_windows % 32 == 0
    chunk_bytes = big.chunk_windows * (per_window * FORWARD_BYTES_PER_NONZERO + 3 * 256 * 4)
    assert chunk_bytes <= big.available_bytes
    small = plan_memory(cc.model_copy(update={"max_memory_gb": 1.1}), per_window, 10**6, 1 * GB)
    assert 32 <= small.chunk_windows < big.chunk_windows
    assert small.shard_target_rows < big.shard_target_rows
    short = plan_memory(cc, per_window, n_windows=40, fixed_bytes=1 * GB)
    assert short.chunk_windows == 64  # no bigger than the run (in whole batches)
    with pytest.raises(CacheBudgetError, match="--batch-size") as err:
        plan_memory(cc.model_copy(update={"max_memory_gb": 1.01}), per_window, 10**6, 1 * GB)
    assert "\n" not in str(err.value)


def test_legacy_plan_resumes_with_its_chunk_size() -> None:
    cc = CacheConfig()
    assert recorded_chunk_windows({"a": {"shards": []}}, cc) == 2048  # written before budgets
    assert recorded_chunk_windows({"a": {"shards": [], "chunk_windows": 96}}, cc) == 96
    assert recorded_chunk_windows({"a": None}, cc) is None


def test_tiny_budget_gives_many_small_chunks_and_the_same_bytes(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {"per_window": [], "chunks": set()}
    plan, write = run_module.plan_memory, writer_module.write_chunk

    def spy_plan(cc: CacheConfig, per_window: float, n: int, fixed: int) -> Any:
        seen["per_window"].append(per_window)
        return plan(cc, per_window, n, 0)  # the process's own RSS left out: budget = buffers

    def spy_write(chunk: writer_module.Chunk, targets: Any) -> None:
        seen["chunks"].add(chunk.index)
        write(chunk, targets)

    monkeypatch.setattr(run_module, "plan_memory", spy_plan)
    monkeypatch.setattr(writer_module, "write_chunk", spy_write)
    ref = make_setup(tmp_path / "ref", tiny_model_dir, **{"cache.chunk_windows": None})
    cache_activations(ref.config(), progress=False)
    assert seen["chunks"] == {0}  # the default budget holds the whole run in one chunk
    # a budget for two batches (8 windows each) of the measured size: 64 windows in 4 chunks
    window_bytes = seen["per_window"][0] * FORWARD_BYTES_PER_NONZERO + 3 * 16 * TOKEN_BYTES
    budget_gb = (2 * 8 * window_bytes + 100) / GB
    seen["chunks"] = set()
    tiny = make_setup(tmp_path / "tiny", tiny_model_dir, **{"cache.chunk_windows": None})
    cache_activations(tiny.config(**{"cache.max_memory_gb": budget_gb}), progress=False)
    assert seen["chunks"] == {0, 1, 2, 3}
    assert snapshot(tiny.root / "run") == snapshot(ref.root / "run")


def test_budget_below_one_batch_is_a_one_line_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    s = make_setup(tmp_path, tiny_model_dir, **{"cache.hookpoints": ["model.layers.1"]})
    with pytest.raises(CacheBudgetError, match="--batch-size"):
        cache_activations(s.config(**{"cache.max_memory_gb": 0.01}), progress=False)
    args = ["cache", "--no-progress", "-c", str(s.yaml()), "--max-memory-gb", "0.01"]
    result = CliRunner().invoke(get_group(app), args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1
    assert "max_memory_gb=0.01 is too small" in errors[0] and "--batch-size" in errors[0]
