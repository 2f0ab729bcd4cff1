"""The cache's disk use: estimated from the first batch, checked against the free space before
the forward pass, and close to what the stage really writes."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_cache import make_setup
from typer.main import get_group

import autointerp.cache.run as cache_run
from autointerp.cache import ActivationCache, CacheDiskError, cache_activations
from autointerp.cache.disk import SHARD_BYTES_PER_NONZERO, SPILL_BYTES_PER_NONZERO, DiskNeed
from autointerp.cli import app
from autointerp.config import load_config
from autointerp.pipeline import demo_config


def _bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    real = shutil.disk_usage
    monkeypatch.setattr(
        "autointerp.cache.disk.shutil.disk_usage", lambda p: real(p)._replace(free=free)
    )


def test_the_estimate_is_the_bytes_the_stage_writes_at_its_peak(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the demo model and SAE over real text: real values, which do not compress
    seen: dict[str, int] = {}
    merge = cache_run.merge_shards

    def measured(layout: Any, *args: Any) -> None:  # spill chunks and shards, both on disk
        merge(layout, *args)
        seen["peak"] = _bytes(layout.root)

    monkeypatch.setattr(cache_run, "merge_shards", measured)
    cfg = load_config(None, {**demo_config(tmp_path), "cache.n_tokens": 16_384})
    cache_activations(cfg, progress=False)
    cache = ActivationCache(tmp_path, "model.layers.1")
    nonzeros = int(cache.stats()["n_active"].sum())
    assert nonzeros == 256 * 63 * 32  # 256 windows, BOS skipped, TopK 32
    peak = DiskNeed(tmp_path, nonzeros, 16_384).peak_bytes
    assert 0.9 * peak < seen["peak"] < 1.1 * peak
    final = _bytes(cache.root)
    assert 0.85 * SHARD_BYTES_PER_NONZERO < final / nonzeros < 1.1 * SHARD_BYTES_PER_NONZERO
    assert seen["peak"] - final >= SPILL_BYTES_PER_NONZERO * nonzeros


def test_a_disk_too_small_is_refused_before_anything_is_cached(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = make_setup(tmp_path, tiny_model_dir, **{"cache.hookpoints": ["model.layers.1"]})
    cfg = s.config()
    _free(monkeypatch, 10_000)
    # 64 windows of 16 tokens, BOS skipped, TopK 4: 3,840 nonzeros of 16 B at the peak and
    # 1,024 tokens of 4 B: 65,536 B, so 1,024 x 10,000 / 65,536 tokens fit
    with pytest.raises(CacheDiskError, match=r"0.1 MB more disk .*\(--n-tokens 156 would fit"):
        cache_activations(cfg, progress=False)
    root = cfg.run_dir / "cache" / "model.layers.1"
    assert not list(root.rglob("*.parquet")) and not list(root.rglob("chunk-*"))
    args = ["cache", "--no-progress", "-c", str(s.yaml())]
    result = CliRunner().invoke(get_group(app), args)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and "free space" in errors[0]
    _free(monkeypatch, 10**12)  # once there is room, the same command caches
    cache_activations(cfg, progress=False)
    assert list(root.rglob("*.parquet"))
