"""Benchmark example construction over a whole cache; the LAST line printed is one JSON object.

    python scripts/bench_sampling.py --run-dir results/bench

Uses the cache in RUN_DIR when it is complete; otherwise builds one of the bundled demo model
and SAE with ``cache_activations`` (>= 1M tokens), or, with ``--synthetic`` (or when the demo
assets are missing), a synthetic cache of the same scale: 4096 latents, 1M tokens, ~32 nonzeros
per token with a skewed latent frequency.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from autointerp.config import DEMO_CODER, DEMO_HOOKPOINT, RunConfig
from autointerp.sampling.build import build_examples
from autointerp.sampling.cachefiles import CacheFiles, hookpoint_dirname

log = logging.getLogger("bench_sampling")


def synthetic_cache(root: Path, n_tokens: int, n_latents: int, k: int, ctx_len: int) -> None:
    """Write a cache in the docs/formats.md layout from random sparse activations."""
    rng = np.random.default_rng(0)
    n_seqs = n_tokens // ctx_len
    (root / "activations").mkdir(parents=True, exist_ok=True)
    tokens = np.minimum(rng.zipf(1.3, size=(n_seqs, ctx_len)), 32000).astype(np.int32)
    pl.DataFrame({"seq_id": np.arange(n_seqs, dtype=np.int32), "tokens": tokens}).with_columns(
        pl.col("tokens").cast(pl.List(pl.Int32))
    ).write_parquet(root / "tokens.parquet", compression="zstd")
    flat = np.repeat(np.arange(n_seqs * ctx_len, dtype=np.int64), k)
    lat = (n_latents * rng.random(len(flat)) ** 2).astype(np.int64)  # skewed frequencies
    key = np.unique(lat * (n_seqs * ctx_len) + flat)  # sorted by (latent, seq, pos)
    lat, flat = key // (n_seqs * ctx_len), key % (n_seqs * ctx_len)
    keep = flat % ctx_len != 0  # BOS never stored
    lat, flat = lat[keep], flat[keep]
    value = rng.exponential(1.0, len(lat)).astype(np.float32) + 0.01
    bounds = np.searchsorted(lat, np.arange(0, n_latents + 1, 256))
    shards = []
    for i, a in enumerate(range(0, n_latents, 256)):
        b = min(a + 256, n_latents)
        s = slice(bounds[i], bounds[i + 1])
        pl.DataFrame(
            {
                "latent": lat[s].astype(np.int32),
                "seq_id": (flat[s] // ctx_len).astype(np.int32),
                "pos": (flat[s] % ctx_len).astype(np.int16),
                "value": value[s],
            }
        ).write_parquet(root / "activations" / f"part-{a:07d}-{b:07d}.parquet", compression="zstd")
        shards.append([a, b])
    stats = (
        pl.DataFrame({"latent": lat.astype(np.int32), "value": value})
        .group_by("latent")
        .agg(
            n_active=pl.len().cast(pl.Int64),
            max=pl.col("value").max(),
            mean=pl.col("value").mean().cast(pl.Float32),
        )
    )
    pl.DataFrame({"latent": np.arange(n_latents, dtype=np.int32)}).join(
        stats, on="latent", how="left"
    ).with_columns(pl.col("n_active").fill_null(0)).write_parquet(root / "latent_stats.parquet")
    meta = {
        "format_version": 1,
        "hookpoint": DEMO_HOOKPOINT,
        "capture": "output",
        "model": "synthetic",
        "coder": "",
        "coder_format": "synthetic",
        "n_latents": n_latents,
        "d_in": 256,
        "ctx_len": ctx_len,
        "n_seqs": n_seqs,
        "n_tokens": n_seqs * ctx_len,
        "n_tokens_counted": n_seqs * (ctx_len - 1),
        "exclude_bos": True,
        "bos_token_id": 0,
        "shards": shards,
        "config_hash": "synthetic",
    }
    (root / "meta.json").write_text(json.dumps(meta))


def ensure_cache(run_dir: Path, synthetic: bool, n_tokens: int) -> tuple[Path, str]:
    root = run_dir / "cache" / hookpoint_dirname(DEMO_HOOKPOINT)
    if (root / "meta.json").is_file():
        kind = json.loads((root / "meta.json").read_text()).get("model")
        return root, "synthetic" if kind == "synthetic" else "real"
    if not synthetic and Path(DEMO_CODER).is_dir():
        from autointerp.cache.run import cache_activations

        cfg = RunConfig.model_validate({"run_dir": str(run_dir), "cache": {"n_tokens": n_tokens}})
        cache_activations(cfg, progress=False)
        return root, "real"
    log.info("building a synthetic cache of %d tokens in %s", n_tokens, root)
    synthetic_cache(root, n_tokens, 4096, 32, 64)
    return root, "synthetic"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run-dir", type=Path, default=Path("results/bench_sampling"))
    ap.add_argument("--synthetic", action="store_true", help="use a synthetic cache")
    ap.add_argument("--n-tokens", type=int, default=1_048_576)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    root, kind = ensure_cache(args.run_dir, args.synthetic, args.n_tokens)
    cache = CacheFiles(root)
    decoder = None
    if kind == "synthetic":
        decoder = torch.randn(cache.n_latents, 256, generator=torch.Generator().manual_seed(0))

    t0 = time.perf_counter()
    n_rows = sum(pl.read_parquet(cache.shard_path(a, b)).height for a, b in cache.shards)
    scan = time.perf_counter() - t0

    shutil.rmtree(args.run_dir / "examples", ignore_errors=True)
    t0 = time.perf_counter()
    [path] = build_examples(args.run_dir, RunConfig(), decoder=decoder, progress=False)
    seconds = time.perf_counter() - t0
    df = pl.read_parquet(path, columns=["latent", "kind"])
    live = df.filter(pl.col("kind") == "activating")["latent"].n_unique()
    result = {
        "cache": kind,
        "n_latents": cache.n_latents,
        "n_latents_with_examples": live,
        "n_tokens": int(cache.meta["n_tokens"]),
        "n_nonzeros": n_rows,
        "rows": df.height,
        "seconds": round(seconds, 3),
        "latents_per_s": round(cache.n_latents / seconds, 1),
        "scan_seconds": round(scan, 3),
        "ratio_to_scan": round(seconds / scan, 2),
        "threads": torch.get_num_threads(),
        "polars_threads": pl.thread_pool_size(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
