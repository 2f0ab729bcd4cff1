"""The cache stage on a tiny model: nonzeros equal a dense recompute; files follow the contract."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from coder_files import WrittenCoder, write_sae_lens, write_sparsify

from autointerp.cache import ActivationCache, cache_activations
from autointerp.config import RunConfig, load_config, save_config

TEXT = (
    "def add(x, y):\n    return x + y\n\nclass Fox:\n    def jump(self, dog):\n"
    "        return 'the quick brown fox jumps over the lazy dog'\n"
)


@dataclass
class Setup:
    root: Path
    coders: dict[str, WrittenCoder]
    overrides: dict[str, Any]

    def config(self, **extra: Any) -> RunConfig:
        return load_config(None, {**self.overrides, **extra})

    def yaml(self, name: str = "config.yaml", **extra: Any) -> Path:
        cfg = self.config(**extra)
        path = self.root / name
        save_config(cfg, self.root)
        (self.root / "run.yaml").rename(path)
        return path


def make_setup(root: Path, model_dir: Path, n_tokens: int = 1024, **extra: Any) -> Setup:
    """Tiny model, a sparsify TopK coder on layer 1 and a ReLU sae-lens coder on layer 0."""
    root.mkdir(parents=True, exist_ok=True)
    coders = {
        "model.layers.1": write_sparsify(root / "sae" / "model.layers.1", 32, 64, k=4, seed=1),
        "model.layers.0": write_sae_lens(root / "sae" / "model.layers.0", 32, 48, seed=2),
    }
    data = root / "data.txt"
    data.write_text(TEXT * 60)
    overrides = {
        "run_dir": str(root / "run"),
        "subject.model": str(model_dir),
        "subject.device": "cpu",
        "coder.path": str(root / "sae"),
        "dataset.source": str(data),
        "cache.hookpoints": ["model.layers.1", "model.layers.0"],
        "cache.n_tokens": n_tokens,
        "cache.ctx_len": 16,
        "cache.batch_size": 8,
        "cache.chunk_windows": 16,
        "cache.shard_latents": 16,
        **extra,
    }
    return Setup(root, coders, overrides)


@pytest.fixture
def setup(tmp_path: Path, tiny_model_dir: Path) -> Setup:
    return make_setup(tmp_path, tiny_model_dir)


def dense_recompute(model_dir: Path, tokens: np.ndarray, module: str, batch: int) -> torch.Tensor:
    """Hookpoint activations ``[n, ctx, d]`` from a plain forward hook (independent of ours)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    captured: list[torch.Tensor] = []
    handle = model.get_submodule(module).register_forward_hook(
        lambda _m, _a, out: captured.append(out[0] if isinstance(out, tuple) else out)
    )
    with torch.no_grad():
        for b in range(0, len(tokens), batch):
            model(torch.from_numpy(tokens[b : b + batch]).long())
    handle.remove()
    return torch.cat(captured)


def test_nonzeros_equal_dense_recompute(setup: Setup, tiny_model_dir: Path) -> None:
    cfg = setup.config()
    folders = cache_activations(cfg, progress=False)
    assert set(folders) == {"model.layers.1", "model.layers.0"}
    assert (cfg.run_dir / "run.yaml").is_file()
    for spec, coder in setup.coders.items():
        cache = ActivationCache(cfg.run_dir, spec)
        tokens = cache.tokens()
        assert tokens.shape == (64, 16) and (tokens[:, 0] == cache.meta["bos_token_id"]).all()
        acts = dense_recompute(tiny_model_dir, tokens, spec, batch=8)
        dense = coder.encode(acts.reshape(-1, 32)).reshape(64, 16, -1)
        dense[:, 0, :] = 0  # BOS excluded
        got = torch.zeros_like(dense)
        df = cache.read_latents()
        index = (df["seq_id"].to_numpy(), df["pos"].to_numpy(), df["latent"].to_numpy())
        got[index] = torch.from_numpy(df["value"].to_numpy())
        assert (got > 0).eq(dense > 0).all(), spec
        torch.testing.assert_close(got, dense, atol=1e-5, rtol=1e-4)
        assert len(df) == int((dense > 0).sum())


def test_files_follow_the_contract(setup: Setup) -> None:
    cfg = setup.config()
    cache_activations(cfg, progress=False)
    root = cfg.run_dir / "cache" / "model.layers.1"
    meta = json.loads((root / "meta.json").read_text())
    assert meta["n_seqs"] == 64 and meta["n_tokens"] == 1024 and meta["n_tokens_counted"] == 960
    assert meta["shards"] == [[0, 16], [16, 32], [32, 48], [48, 64]]
    assert meta["exclude_bos"] is True and meta["coder_format"] == "sparsify"
    assert not (root / "_work").exists()
    schema = pq.read_schema(root / "tokens.parquet")
    assert str(schema.field("seq_id").type) == "int32"
    assert str(schema.field("tokens").type) == "list<element: int32>"
    parts = sorted((root / "activations").iterdir())
    assert [p.name for p in parts][0] == "part-0000000-0000016.parquet"
    frames = []
    for part, (start, end) in zip(parts, meta["shards"], strict=True):
        table = pq.read_table(part)
        assert [str(t) for t in table.schema.types] == ["int32", "int32", "int16", "float"]
        df = pl.from_arrow(table)
        assert df["latent"].min() >= start and df["latent"].max() < end
        assert df.equals(df.sort("latent", "seq_id", "pos"))
        assert (df["value"] > 0).all() and (df["pos"] > 0).all()
        frames.append(df)
    nz = pl.concat(frames)
    stats = pl.read_parquet(root / "latent_stats.parquet")
    assert stats["latent"].to_list() == list(range(64))
    want = nz.group_by("latent").agg(
        pl.len().alias("n"), pl.col("value").max().alias("mx"), pl.col("seq_id").n_unique()
    )
    joined = stats.join(want, on="latent", how="left").fill_null(0)
    assert (joined["n_active"] == joined["n"]).all()
    assert (joined["n_windows"] == joined["seq_id"]).all()
    live = joined.filter(pl.col("n_active") > 0)
    assert np.allclose(live["max"].to_numpy(), live["mx"].to_numpy())
    assert np.allclose(stats["frequency"].to_numpy(), stats["n_active"].to_numpy() / 960)
    assert (live["q10"] <= live["q50"]).all() and (live["q50"] <= live["q99"]).all()
    assert stats["n_active"].sum() == len(nz)


def test_rerun_of_complete_cache_is_a_no_op(setup: Setup) -> None:
    cfg = setup.config()
    cache_activations(cfg, progress=False)
    part = cfg.run_dir / "cache" / "model.layers.1" / "activations" / "part-0000000-0000016.parquet"
    before = part.stat().st_mtime_ns
    cache_activations(cfg, progress=False)
    assert part.stat().st_mtime_ns == before


def test_default_shard_size_and_short_dataset(tmp_path: Path, tiny_model_dir: Path) -> None:
    s = make_setup(tmp_path, tiny_model_dir, n_tokens=10**6, **{"cache.shard_latents": None})
    cfg = s.config(**{"cache.hookpoints": ["model.layers.1"], "cache.shard_target_rows": 2000})
    cache_activations(cfg, progress=False)  # warns: the dataset is shorter than asked
    cache = ActivationCache(cfg.run_dir, "model.layers.1")
    n_seqs = cache.meta["n_seqs"]
    assert 0 < n_seqs < 10**6 // 16 and cache.meta["n_tokens"] == n_seqs * 16
    assert len(cache.shards) > 1
    assert cache.shards[0][0] == 0 and cache.shards[-1][1] == 64
    assert all(a[1] == b[0] for a, b in zip(cache.shards, cache.shards[1:], strict=False))
    one = cache.read_latent(5)
    assert set(one["latent"].to_list()) <= {5}


def test_cli_yaml_plus_flags_and_run_yaml(setup: Setup) -> None:
    import yaml
    from click.testing import CliRunner
    from typer.main import get_group

    from autointerp.cli import app

    config = setup.yaml(**{"cache.hookpoints": ["model.layers.0"]})
    args = [
        "cache",
        "-c",
        str(config),
        "--n-tokens",
        "512",
        "--hookpoint",
        "model.layers.1",
        "--ctx-len",
        "8",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--no-progress",
    ]
    result = CliRunner().invoke(get_group(app), args)
    assert result.exit_code == 0, result.output
    run_dir = setup.root / "run"
    saved = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert saved["cache"]["n_tokens"] == 512 and saved["cache"]["hookpoints"] == ["model.layers.1"]
    assert saved["cache"]["chunk_windows"] == 16  # from the YAML file
    meta = ActivationCache(run_dir, "model.layers.1").meta
    assert meta["n_seqs"] == 64 and meta["ctx_len"] == 8
    assert not (run_dir / "cache" / "model.layers.0").exists()
