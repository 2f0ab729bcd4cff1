"""Write an activation cache exactly as docs/formats.md describes, from arrays the test controls.

``write_cache(run_dir, tokens, dense)`` takes token ids ``[n_seqs, ctx_len]`` and dense latent
activations ``[n_seqs, ctx_len, n_latents]`` so tests can check results against brute force.
``random_cache`` makes one with structure: token-triggered latents, rare and dead ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.config import DEMO_MODEL

QUANTILES = (10, 25, 50, 75, 90, 99)


def write_nonzeros(
    run_dir: Path,
    hookpoint: str,
    tokens: np.ndarray,
    latent: np.ndarray,
    seq: np.ndarray,
    pos: np.ndarray,
    value: np.ndarray,
    n_latents: int,
    shard: int = 16,
    coder: str = "",
) -> Path:
    """Write a cache from sparse nonzeros (any order; values > 0)."""
    n_seqs, ctx_len = tokens.shape
    root = Path(run_dir) / "cache" / hookpoint.replace(":", "@")
    (root / "activations").mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"seq_id": np.arange(n_seqs, dtype=np.int32), "tokens": tokens.astype(np.int32)}
    ).with_columns(pl.col("tokens").cast(pl.List(pl.Int32))).write_parquet(
        root / "tokens.parquet", compression="zstd"
    )
    nz = pl.DataFrame(
        {
            "latent": latent.astype(np.int32),
            "seq_id": seq.astype(np.int32),
            "pos": pos.astype(np.int16),
            "value": value.astype(np.float32),
        }
    ).sort(["latent", "seq_id", "pos"])
    shards = [[a, min(a + shard, n_latents)] for a in range(0, n_latents, shard)]
    for a, b in shards:
        part = nz.filter((pl.col("latent") >= a) & (pl.col("latent") < b))
        part.write_parquet(root / "activations" / f"part-{a:07d}-{b:07d}.parquet")
    counted = n_seqs * (ctx_len - 1)
    agg = nz.group_by("latent").agg(
        n_active=pl.len().cast(pl.Int64),
        n_windows=pl.col("seq_id").n_unique().cast(pl.Int64),
        max=pl.col("value").max(),
        mean=pl.col("value").mean().cast(pl.Float32),
        **{f"q{q}": pl.col("value").quantile(q / 100).cast(pl.Float32) for q in QUANTILES},
    )
    stats = (
        pl.DataFrame({"latent": np.arange(n_latents, dtype=np.int32)})
        .join(agg, on="latent", how="left")
        .with_columns(
            pl.col("n_active").fill_null(0),
            pl.col("n_windows").fill_null(0),
            frequency=pl.col("n_active").fill_null(0) / counted,
        )
    )
    stats.write_parquet(root / "latent_stats.parquet")
    meta = {
        "format_version": 1,
        "hookpoint": hookpoint,
        "capture": "output",
        "model": DEMO_MODEL,  # token ids are displayed with the demo tokenizer
        "coder": coder,
        "coder_format": "synthetic",
        "n_latents": n_latents,
        "d_in": 8,
        "ctx_len": ctx_len,
        "n_seqs": n_seqs,
        "n_tokens": n_seqs * ctx_len,
        "n_tokens_counted": counted,
        "exclude_bos": True,
        "bos_token_id": 0,
        "shards": shards,
        "config_hash": "synthetic",
    }
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def write_cache(
    run_dir: Path,
    tokens: np.ndarray,
    dense: np.ndarray,
    hookpoint: str = "model.layers.1",
    shard: int = 16,
) -> Path:
    """Write a cache from dense activations ``[n_seqs, ctx_len, n_latents]``."""
    seq, pos, lat = np.nonzero(dense > 0)
    return write_nonzeros(
        run_dir, hookpoint, tokens, lat, seq, pos, dense[seq, pos, lat], dense.shape[2], shard
    )


def random_cache(
    run_dir: Path,
    n_seqs: int = 200,
    ctx_len: int = 32,
    n_latents: int = 48,
    vocab: int = 50,
    seed: int = 0,
    shard: int = 16,
    hookpoint: str = "model.layers.1",
) -> tuple[np.ndarray, np.ndarray]:
    """A structured random cache; returns (tokens, dense).

    Latent ``l``: fires on token ``l % vocab`` (strongly) and at random elsewhere with a
    latent-specific rate; latent 0 is dead, latent 1 fires 3 times, latent 2 fires everywhere
    in the first half of the sequences. Position 0 (BOS) never fires.
    """
    rng = np.random.default_rng(seed)
    tokens = rng.integers(1, vocab, size=(n_seqs, ctx_len)).astype(np.int32)
    tokens[:, 0] = 0
    rates = rng.uniform(0.002, 0.05, size=n_latents)
    dense = np.where(
        rng.random((n_seqs, ctx_len, n_latents)) < rates,
        rng.exponential(1.0, size=(n_seqs, ctx_len, n_latents)),
        0.0,
    ).astype(np.float32)
    trig = tokens[:, :, None] == (np.arange(n_latents) % vocab)[None, None, :]
    dense = np.where(trig & (rng.random(dense.shape) < 0.7), 3 + rng.random(dense.shape), dense)
    dense[..., 0] = 0
    dense[..., 1] = 0
    dense[rng.integers(0, n_seqs, 3), rng.integers(1, ctx_len, 3), 1] = 2.0
    dense[: n_seqs // 2, 1:, 2] = rng.uniform(0.1, 1.0, size=(n_seqs // 2, ctx_len - 1))
    dense[:, 0, :] = 0
    dense = np.round(dense, 3).astype(np.float32)  # fewer exact ties would be luck; keep some
    write_cache(run_dir, tokens, dense, hookpoint=hookpoint, shard=shard)
    return tokens, dense
