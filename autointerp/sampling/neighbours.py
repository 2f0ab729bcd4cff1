"""Decoder neighbours (chunked cosine top-k, never a dense n x n matrix) and the small table
of every latent's top activating windows that neighbour contrast windows come from."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import torch

from autointerp.sampling.activating import rank_in_runs, run_starts
from autointerp.sampling.cachefiles import CacheFiles, Nonzeros
from autointerp.sampling.windows import Candidates, Geometry, candidate_windows

log = logging.getLogger(__name__)


def decoder_neighbours(
    decoder: torch.Tensor | np.ndarray, latents: np.ndarray, k: int, chunk: int = 4096
) -> pl.DataFrame:
    """The ``k`` latents whose decoder rows are most cosine-similar to each of ``latents``.

    ``decoder`` is ``[n_latents, d]``. Works in chunks of ``chunk`` query rows against all rows,
    so memory is ``chunk x n_latents``. Self is excluded; ties go to the lower index.
    Columns: latent, neighbour, nb_rank, cosine.
    """
    dec = torch.as_tensor(decoder).detach().float()
    dec = dec / dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
    k = min(k, dec.shape[0] - 1)
    frames = []
    if k <= 0 or len(latents) == 0:
        return _neighbour_frame(np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))
    for lo in range(0, len(latents), chunk):
        q = torch.as_tensor(latents[lo : lo + chunk], dtype=torch.long)
        sims = dec[q] @ dec.T  # [chunk, n_latents]
        sims[torch.arange(len(q)), q] = -float("inf")
        _, idx = torch.topk(sims, k, dim=1, sorted=True)
        # exact per-pair cosines: independent of how queries were batched (resume-stable)
        vals = (dec[q][:, None, :] * dec[idx]).sum(-1)
        frames.append(_neighbour_frame(q.numpy(), idx.numpy(), vals.numpy()))
    return pl.concat(frames)


def _neighbour_frame(q: np.ndarray, idx: np.ndarray, vals: np.ndarray) -> pl.DataFrame:
    k = idx.shape[1] if idx.ndim == 2 else 0
    return pl.DataFrame(
        {
            "latent": np.repeat(q, k).astype(np.int32),
            "neighbour": idx.reshape(-1).astype(np.int32),
            "nb_rank": np.tile(np.arange(k), len(q)).astype(np.int32),
            "cosine": vals.reshape(-1).astype(np.float32),
        }
    )


def load_decoder(cache: CacheFiles) -> torch.Tensor:
    """Decoder rows of the coder named in the cache's meta.json (``coder`` + ``hookpoint``)."""
    coder_path = cache.meta.get("coder")
    if not coder_path:
        raise ValueError(
            f"{cache.dir}/meta.json names no coder: pass decoder rows to build_examples or set "
            "the neighbour counts of sample.train/selection/test to 0"
        )
    try:
        from autointerp.coders.loader import load_coder
    except ImportError as exc:  # pragma: no cover - the coders stage is a sibling package
        raise ImportError(
            "autointerp.coders.loader.load_coder is unavailable; pass decoder rows explicitly "
            "or set the neighbour counts to 0"
        ) from exc
    coder = load_coder(coder_path, hookpoint=cache.hookpoint)
    rows = coder.decoder_rows.detach().float().cpu()
    if rows.shape[0] != cache.n_latents:
        raise ValueError(
            f"coder {coder_path} has {rows.shape[0]} latents but the cache at {cache.dir} has "
            f"{cache.n_latents}: the cache was made with another coder"
        )
    return rows


def _strong(nz: Nonzeros) -> np.ndarray:
    """Mask of the nonzeros at >= half their latent's max (a window's max is >= half the
    latent's max exactly when it holds such a nonzero; its max and peak come from them)."""
    starts = run_starts(nz.latent)
    counts = np.diff(np.append(starts, len(nz)))
    half = np.maximum.reduceat(nz.value, starts) * np.float32(0.5)
    return nz.value >= np.repeat(half, counts)


def _ranked(c: Candidates, n: int) -> pl.DataFrame:
    """Top ``n`` of ``c`` per latent by max desc (stable: ties keep (seq_id, start) order)."""
    key = (c.latent.astype(np.uint64) << np.uint64(32)) | (
        np.uint64(0xFFFFFFFF) - c.max.view(np.uint32).astype(np.uint64)
    )
    order = np.argsort(key, kind="stable")
    rank = rank_in_runs(c.latent[order])
    keep = order[rank < n]
    return pl.DataFrame(
        {
            "latent": c.latent[keep],
            "seq_id": c.seq_id[keep],
            "start": c.start[keep],
            "win_rank": rank[rank < n].astype(np.int32),
        }
    )


def shard_top_windows(cache: CacheFiles, geo: Geometry, n: int, a: int, b: int) -> pl.DataFrame:
    """Top ``n`` windows of every latent of the cache shard ``[a, b)``.

    Windows are built from the strong nonzeros only; latents with fewer than ``n`` strong
    windows get all their windows from every nonzero.
    """
    nz = cache.read_shard(a, b)
    if len(nz) == 0:
        return _ranked(candidate_windows(nz, geo), n)
    c = candidate_windows(nz.subset(_strong(nz)), geo)
    lats, counts = np.unique(c.latent, return_counts=True)
    enough = np.zeros(b - a, dtype=bool)
    enough[lats[counts >= n] - a] = True
    weak = ~enough[nz.latent - a]
    frames = [_ranked(c.take(np.flatnonzero(enough[c.latent - a])), n)]
    if weak.any():
        frames.append(_ranked(candidate_windows(nz.subset(weak), geo), n))
    return pl.concat(frames).sort("latent", "win_rank")


def top_windows(cache: CacheFiles, geo: Geometry, n: int, work: Path | None) -> pl.DataFrame:
    """Top ``n`` windows (by max activation) of every latent: latent, seq_id, start, win_rank.

    One pass over all shards; the small result is kept in ``work`` (when given) for resumes.
    """
    path = None
    if work is not None:
        name = f"{geo.placement}-{geo.window_len}-{geo.offset}-{geo.first}-{geo.seed}-{n}"
        path = work / f"_top_windows-{name}.parquet"
        if path.is_file():
            return pl.read_parquet(path)
    n_workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(n_workers) as pool:
        frames = list(pool.map(lambda s: shard_top_windows(cache, geo, n, *s), cache.shards))
    out = (
        pl.concat(frames)
        if frames
        else pl.DataFrame(
            schema={"latent": pl.Int32, "seq_id": pl.Int32, "start": pl.Int32, "win_rank": pl.Int32}
        )
    )
    if path is not None:
        tmp = path.with_suffix(".tmp")
        out.write_parquet(tmp)
        tmp.replace(path)
    log.info("top windows of %d latents computed", out["latent"].n_unique())
    return out
