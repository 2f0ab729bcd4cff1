"""The fast paths of the sampling stage agree with their plain versions: strong-nonzero top
windows, characteristic-token prefilter and cache-sized blocks, threaded shards and the final
file streamed while parts are built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_cache import random_cache

import autointerp.sampling.build as build
from autointerp.sampling import SampleConfig, SplitMix
from autointerp.sampling.activating import rank_in_runs
from autointerp.sampling.cachefiles import CacheFiles
from autointerp.sampling.contrast import TokenIndex, characteristic_tokens
from autointerp.sampling.neighbours import top_windows
from autointerp.sampling.windows import Geometry, candidate_windows


def _brute_top_windows(cache: CacheFiles, geo: Geometry, n: int) -> pl.DataFrame:
    frames = []
    for a, b in cache.shards:
        c = candidate_windows(cache.read_shard(a, b), geo)
        # by latent, max desc, then (seq_id, start): candidates are (latent, seq, start) sorted
        order = np.lexsort((np.arange(len(c)), -c.max.astype(np.float64), c.latent))
        rank = rank_in_runs(c.latent[order])
        keep = order[rank < n]
        frames.append(
            pl.DataFrame(
                {
                    "latent": c.latent[keep],
                    "seq_id": c.seq_id[keep],
                    "start": c.start[keep],
                    "win_rank": rank[rank < n].astype(np.int32),
                }
            )
        )
    return pl.concat(frames)


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 1000),
    window=st.integers(1, 12),
    placement=st.sampled_from(["spread", "peak", "aligned"]),
    n=st.integers(1, 6),
)
def test_top_windows_equal_brute_force(
    tmp_path_factory: pytest.TempPathFactory, seed: int, window: int, placement: str, n: int
) -> None:
    run = tmp_path_factory.mktemp("topw")
    random_cache(run, n_latents=12, n_seqs=30, ctx_len=12, seed=seed, shard=5)
    cache = CacheFiles(run / "cache" / "model.layers.1")
    first = int(window < cache.ctx_len)  # windows after the BOS where there is room
    geo = Geometry(cache.n_seqs, cache.ctx_len, window, placement, min(window - 1, 3), first, seed)
    assert top_windows(cache, geo, n, None).equals(_brute_top_windows(cache, geo, n))


def test_characteristic_tokens_blocks_and_prefilter(tmp_path: Path) -> None:
    random_cache(tmp_path, n_latents=40, seed=3)
    cache = CacheFiles(tmp_path / "cache" / "model.layers.1")
    tokens = cache.tokens
    index = TokenIndex(tokens)
    nz = cache.read_shard(*cache.shards[0])
    args = (tokens, index, nz.latent, nz.seq_id, nz.pos, nz.value)
    for k in (1, 3, 40):
        ref = characteristic_tokens(*args, k, max_bins=1 << 30)
        for bins in (1, 64, 1 << 12):
            assert characteristic_tokens(*args, k, max_bins=bins).equals(ref)
        # brute force: score = activation-weighted count x idf, ties to the lower token id
        tok = tokens[nz.seq_id, nz.pos].astype(np.int64)
        df = pl.DataFrame({"latent": nz.latent, "token": tok, "w": nz.value.astype(np.float64)})
        brute = (
            df.group_by("latent", "token", maintain_order=True)
            .agg(pl.col("w").sum())
            .with_columns(
                score=pl.col("w")
                * pl.col("token").map_elements(
                    lambda t: float(index.idf[t]), return_dtype=pl.Float64
                )
            )
            .filter(pl.col("score") > 0)
            .sort("latent", pl.col("score"), "token", descending=[False, True, False])
            .with_columns(token_rank=pl.int_range(pl.len()).over("latent"))
            .filter(pl.col("token_rank") < k)
        )
        assert (
            ref.select("latent", "token").rows()
            == brute.select(pl.col("latent").cast(pl.Int32), "token").rows()
        )


def _cfg() -> SampleConfig:
    mix = SplitMix(topk=2, quantile=4, uniform=2, random=2, similar=2, neighbour=2)
    return SampleConfig(
        seed=5, window_len=6, n_quantiles=2, min_activations=3, train=mix, selection=mix, test=mix
    )


def test_threads_and_streamed_final_are_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dec = torch.randn(48, 8, generator=torch.Generator().manual_seed(1))
    paths = []
    for name, workers in (("one", 1), ("two", 2)):
        random_cache(tmp_path / name, seed=7, shard=8)
        monkeypatch.setattr(build, "MAX_WORKERS", workers)
        [path] = build.build_examples(tmp_path / name, _cfg(), decoder=dec, progress=False)
        paths.append(path)
    # resumed: the final file is merged from parts of two runs (no streaming)
    random_cache(tmp_path / "resumed", seed=7, shard=8)
    build.build_examples(tmp_path / "resumed", _cfg(), decoder=dec, latents=[9, 30], progress=False)
    [path] = build.build_examples(tmp_path / "resumed", _cfg(), decoder=dec, progress=False)
    paths.append(path)
    ref = pl.read_parquet(paths[0])
    assert ref.height > 0
    for p in paths[1:]:
        assert pl.read_parquet(p).equals(ref)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert not list(paths[0].parent.glob("*.tmp"))
