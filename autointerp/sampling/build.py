"""``build_examples``: the cache of every hookpoint -> ``examples/<hookpoint>.parquet``.

One latent-range shard of the cache is in memory at a time; each finished range is written as
a part file at once, so a rerun resumes where a crash stopped and never rebuilds a latent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from rich.progress import Progress

from autointerp.sampling.activating import select_activating
from autointerp.sampling.cachefiles import CacheFiles, find_hookpoints, hookpoint_dirname
from autointerp.sampling.config import SPLITS, SampleConfig
from autointerp.sampling.contrast import (
    ShardContext,
    TokenIndex,
    characteristic_tokens,
    neighbour_contrast,
    random_contrast,
    similar_contrast,
)
from autointerp.sampling.hashing import split_of_seqs
from autointerp.sampling.neighbours import decoder_neighbours, load_decoder, top_windows
from autointerp.sampling.schema import SCHEMA, assemble, skipped_rows
from autointerp.sampling.store import ExampleStore
from autointerp.sampling.windows import Geometry, candidate_windows

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
MAX_WORKERS = 2  # shards processed at once (threads)


def resolve_sample_config(run_dir: Path, config: Any) -> tuple[SampleConfig, int]:
    """(sample config, seed) from a RunConfig, a SampleConfig, or the run's run.yaml."""
    from autointerp.config import RunConfig, load_config

    if config is None:
        run_yaml = Path(run_dir) / "run.yaml"
        config = load_config(run_yaml) if run_yaml.is_file() else RunConfig()
    if isinstance(config, SampleConfig):
        return config, config.seed if config.seed is not None else 0
    sample: SampleConfig = config.sample
    return sample, sample.seed if sample.seed is not None else config.seed


def _need(cfg: SampleConfig, source: str) -> bool:
    return any(getattr(cfg.mix(s), source) > 0 for s in SPLITS)


def build_examples(
    run_dir: str | Path,
    config: Any = None,
    hookpoints: list[str] | None = None,
    latents: list[int] | np.ndarray | None = None,
    decoder: torch.Tensor | dict[str, torch.Tensor] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Build example windows for ``latents`` (default all) of each hookpoint's cache.

    ``config``: a RunConfig, a SampleConfig, or None (the run's run.yaml, else defaults).
    ``decoder``: decoder rows ``[n_latents, d]`` (or a dict hookpoint -> rows) for neighbour
    windows; by default they are loaded from the coder named in the cache's meta.json.
    Returns the written ``examples/<hookpoint>.parquet`` paths.
    """
    run_dir = Path(run_dir)
    cfg, seed = resolve_sample_config(run_dir, config)
    hookpoints = hookpoints or find_hookpoints(run_dir)
    if not hookpoints:
        raise FileNotFoundError(
            f"no completed cache under {run_dir}/cache: run `autointerp cache` first"
        )
    out = []
    for hp in hookpoints:
        dec = decoder.get(hp) if isinstance(decoder, dict) else decoder
        out.append(_build_hookpoint(run_dir, hp, cfg, seed, latents, dec, overwrite, progress))
    return out


def _build_hookpoint(
    run_dir: Path,
    hookpoint: str,
    cfg: SampleConfig,
    seed: int,
    latents: Any,
    decoder: torch.Tensor | None,
    overwrite: bool,
    progress: bool,
) -> Path:
    cache = CacheFiles(run_dir / "cache" / hookpoint_dirname(hookpoint))
    # a window never shows the excluded BOS (unless windows span whole sequences: then every
    # window shows it, activating or not)
    first = 1 if cache.meta.get("exclude_bos") and cfg.window_len < cache.ctx_len else 0
    geo = Geometry(
        cache.n_seqs, cache.ctx_len, cfg.window_len, cfg.placement, cfg.offset, first, seed
    )
    blob = json.dumps([cfg.model_dump(mode="json"), seed, cache.meta.get("config_hash")])
    config_hash = hashlib.sha256(blob.encode()).hexdigest()[:16]
    store = ExampleStore(run_dir, hookpoint_dirname(hookpoint))
    store.open(config_hash, overwrite)
    requested = _requested(latents, cache.n_latents)
    todo = np.setdiff1d(requested, store.done_latents())
    log.info("%s: %d latents requested, %d to build", hookpoint, len(requested), len(todo))
    if len(todo):
        _run(cache, geo, cfg, seed, todo, decoder, store, progress)
    info = {
        "format_version": FORMAT_VERSION,
        "hookpoint": hookpoint,
        "config_hash": config_hash,
        "seed": seed,
        "sample": cfg.model_dump(mode="json"),
        "window_len": cfg.window_len,
        "n_latents_done": int(len(store.done_latents())),
        "n_latents": cache.n_latents,
        "columns": list(SCHEMA),
    }
    return store.finalize(info)


def _requested(latents: Any, n_latents: int) -> np.ndarray:
    if latents is None:
        return np.arange(n_latents, dtype=np.int64)
    req = np.unique(np.asarray(list(latents), dtype=np.int64))
    bad = req[(req < 0) | (req >= n_latents)]
    if len(bad):
        raise ValueError(f"latents {bad[:5].tolist()} out of range: the coder has {n_latents}")
    return req


def _run(
    cache: CacheFiles,
    geo: Geometry,
    cfg: SampleConfig,
    seed: int,
    todo: np.ndarray,
    decoder: torch.Tensor | None,
    store: ExampleStore,
    progress: bool,
) -> None:
    stats = cache.stats
    n_active = np.zeros(cache.n_latents, dtype=np.int64)
    n_active[stats["latent"].to_numpy()] = stats["n_active"].fill_null(0).to_numpy()
    latent_max = np.zeros(cache.n_latents, dtype=np.float32)
    latent_max[stats["latent"].to_numpy()] = stats["max"].fill_null(0).to_numpy()
    tokens = cache.tokens
    split_of_seq = split_of_seqs(cache.n_seqs, cfg.split_fractions, seed)
    index = emb = None
    if _need(cfg, "similar") and cfg.similar_embedding_model is None:
        index = TokenIndex(tokens)
    elif _need(cfg, "similar"):
        from autointerp.sampling.embedding import WindowEmbeddings

        emb = WindowEmbeddings(
            cfg.similar_embedding_model,
            tokens,
            cfg.window_len,
            cfg.embedding_batch_size,
            cfg.embedding_device,
        )
    neighbours = topw = None
    live_todo = todo[n_active[todo] >= cfg.min_activations]
    if _need(cfg, "neighbour") and len(live_todo):
        dec = decoder if decoder is not None else load_decoder(cache)
        neighbours = decoder_neighbours(dec, live_todo, cfg.n_neighbours, cfg.neighbour_chunk)
        topw = top_windows(cache, geo, cfg.neighbour_windows, store.parts)
    shards = [(a, b) for a, b in cache.shards if np.any((todo >= a) & (todo < b))]

    def work(shard: tuple[int, int]) -> tuple[Path, int]:
        a, b = shard
        lat = todo[(todo >= a) & (todo < b)]
        df = _shard(
            cache,
            geo,
            cfg,
            seed,
            lat,
            n_active,
            latent_max,
            tokens,
            split_of_seq,
            index,
            emb,
            neighbours,
            topw,
        )
        return store.write_part(df), len(lat)

    # numpy, pyarrow and polars release the GIL in their heavy loops: shards in threads
    n_workers = 1 if emb is not None else min(MAX_WORKERS, os.cpu_count() or 1, len(shards))
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task(f"examples {cache.hookpoint}", total=len(todo))
        streaming = not store.part_files()  # this run writes every part: merge as they come
        try:
            with ThreadPoolExecutor(max(1, n_workers)) as pool:
                for part, n_done in pool.map(work, shards):
                    if streaming:
                        store.stream(part)
                    bar.advance(task, n_done)
        except BaseException:
            store.close_stream()
            raise


def _shard(
    cache: CacheFiles,
    geo: Geometry,
    cfg: SampleConfig,
    seed: int,
    lat: np.ndarray,
    n_active: np.ndarray,
    latent_max: np.ndarray,
    tokens: np.ndarray,
    split_of_seq: np.ndarray,
    index: TokenIndex | None,
    emb: Any,
    neighbours: pl.DataFrame | None,
    topw: pl.DataFrame | None,
) -> pl.DataFrame:
    """Rows of the latents ``lat`` (all inside one cache shard)."""
    short = n_active[lat] < cfg.min_activations
    reasons = [
        "dead: never fires in the cache"
        if n == 0
        else f"only {n} activations < min_activations={cfg.min_activations}"
        for n in n_active[lat[short]]
    ]
    skipped = skipped_rows(lat[short], reasons)
    live = lat[~short]
    if len(live) == 0:
        return skipped
    nz = _shard_nonzeros(cache, lat, live)
    keys = nz.keys(geo.n_seqs, geo.ctx_len)
    act = select_activating(candidate_windows(nz, geo), split_of_seq, cfg, seed)
    ctx = ShardContext(geo, keys, split_of_seq, cfg, seed)
    contrast: list[pl.DataFrame] = []  # sources in priority order; a window is used once
    if index is not None:
        char = characteristic_tokens(
            tokens, index, nz.latent, nz.seq_id, nz.pos, nz.value, cfg.similar_tokens
        )
        contrast.append(similar_contrast(ctx, index, char))
    elif emb is not None:
        from autointerp.sampling.embedding import embedding_contrast

        contrast.append(embedding_contrast(ctx, emb, act))
    if neighbours is not None and topw is not None:
        nb = neighbours.filter(pl.col("latent").is_in(live.tolist()))
        contrast.append(neighbour_contrast(ctx, nb, topw, _taken(contrast)))
    contrast.append(random_contrast(ctx, live, _taken(contrast)))
    act = act.drop("peak").with_columns(
        source_latent=pl.lit(None, dtype=pl.Int32), source_similarity=pl.lit(None, pl.Float32)
    )
    parts = [act, *contrast]
    rows = pl.concat([p.select(contrast[0].columns) for p in parts])
    full = assemble(rows, geo, tokens, keys, nz.value, latent_max)
    return pl.concat([full, skipped]).sort("latent", maintain_order=True)


def _taken(frames: list[pl.DataFrame]) -> pl.DataFrame | None:
    return pl.concat([f.select("latent", "seq_id", "start") for f in frames]) if frames else None


def _shard_nonzeros(cache: CacheFiles, lat: np.ndarray, live: np.ndarray) -> Any:
    for a, b in cache.shards:
        if a <= lat[0] < b:
            return cache.read_shard(a, b, live)
    raise ValueError(f"latent {lat[0]} is in no shard of {cache.dir}")
