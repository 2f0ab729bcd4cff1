"""Activating samplers over all latents of a shard at once: top-k, quantile-stratified and
uniform. Sampler draws are made without replacement, in that order, within each split."""

from __future__ import annotations

import numpy as np
import polars as pl

from autointerp.sampling.config import SPLITS, SampleConfig
from autointerp.sampling.hashing import uniform01
from autointerp.sampling.windows import Candidates

_TAG_QUANTILE, _TAG_UNIFORM = 11, 12


def run_starts(key: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    if len(key) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))


def rank_in_runs(key: np.ndarray) -> np.ndarray:
    """0-based index of each element inside its run of equal (sorted) keys."""
    starts = run_starts(key)
    counts = np.diff(np.append(starts, len(key)))
    return np.arange(len(key)) - np.repeat(starts, counts)


def pick_smallest(group: np.ndarray, need: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Mask choosing, in every group, the ``need`` rows with the smallest ``r`` (all if fewer).

    Groups are prefiltered by a threshold on ``r`` (exact: a group whose prefilter keeps too
    few rows is taken whole), so the sort touches about ``2 * need`` rows per group.
    """
    chosen = np.zeros(len(group), dtype=bool)
    if len(group) == 0 or not need.any():
        return chosen
    size = np.bincount(group)
    g = size[group]
    keep = (need > 0) & (r < np.minimum(1.0, (2.0 * need + 8.0) / g))
    kept = np.bincount(group[keep], minlength=len(size))[group]
    keep |= (need > 0) & (kept < need) & (kept < g)
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((idx, r[idx], group[idx]))]
    chosen[idx[rank_in_runs(group[idx]) < need[idx]]] = True
    return chosen


def quantile_targets(n: int, n_bins: int) -> np.ndarray:
    """How many windows each bin gives to a quantile draw of ``n`` (extra ones to top bins)."""
    base = np.full(n_bins, n // n_bins, dtype=np.int64)
    base[n_bins - n % n_bins :] += 1 if n % n_bins else 0
    return base


def select_activating(
    cands: Candidates, split_of_seq: np.ndarray, cfg: SampleConfig, seed: int
) -> pl.DataFrame:
    """Activating rows of every latent in ``cands``.

    Quantile bins are equal-count bins of the latent's window max activations over the whole
    cache (bin 0 weakest, ``n_quantiles - 1`` strongest), the same bins for every split.
    """
    n = len(cands)
    if n == 0:
        return _frame(cands, np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros(0, np.int8))
    key = (cands.latent.astype(np.uint64) << np.uint64(32)) | (
        np.uint64(0xFFFFFFFF) - cands.max.view(np.uint32).astype(np.uint64)
    )
    c = cands.take(np.argsort(key, kind="stable"))  # latent asc, max desc, (seq, start) asc
    starts = run_starts(c.latent)
    counts = np.diff(np.append(starts, n))
    per_latent = np.repeat(counts, counts)
    rank_desc = np.arange(n) - np.repeat(starts, counts)
    nb = cfg.n_quantiles
    qbin = ((per_latent - 1 - rank_desc) * nb // per_latent).astype(np.int8)
    split = split_of_seq[c.seq_id]
    mixes = [cfg.mix(s) for s in SPLITS]

    rank_split = np.zeros(n, dtype=np.int64)
    for k in range(len(SPLITS)):
        m = (split == k).astype(np.int64)
        cum = np.cumsum(m)
        rank_split = np.where(m == 1, cum - np.repeat((cum - m)[starts], counts) - 1, rank_split)
    n_topk = np.array([mx.topk for mx in mixes])[split]
    topk = rank_split < n_topk

    lat_local = (c.latent - c.latent[0]).astype(np.int64)
    targets = np.stack([quantile_targets(mx.quantile, nb) for mx in mixes])
    need_q = np.where(topk, 0, targets[split, qbin])
    group_q = (lat_local * len(SPLITS) + split) * nb + qbin
    wkey = (c.latent.astype(np.int64) * (1 << 31) + c.seq_id) * (1 << 16) + c.start
    r_q = uniform01(seed, _TAG_QUANTILE, wkey)
    quant = pick_smallest(group_q, need_q, r_q)

    need_u = np.where(topk | quant, 0, np.array([mx.uniform for mx in mixes])[split])
    r_u = uniform01(seed, _TAG_UNIFORM, wkey)
    unif = pick_smallest(lat_local * len(SPLITS) + split, need_u, r_u)

    sampler = np.full(n, -1, dtype=np.int8)
    sampler[topk] = 0
    sampler[quant] = 1
    sampler[unif] = 2
    sel = np.flatnonzero(sampler >= 0)
    return _frame(c.take(sel), split[sel], sampler[sel], qbin[sel])


def _frame(c: Candidates, split: np.ndarray, sampler: np.ndarray, qbin: np.ndarray) -> pl.DataFrame:
    names = np.array(["topk", "quantile", "uniform"])
    return pl.DataFrame(
        {
            "latent": c.latent.astype(np.int32),
            "split": np.array(SPLITS)[split.astype(np.int64)],
            "kind": np.full(len(c), "activating"),
            "sampler": names[sampler.astype(np.int64)],
            "quantile": pl.Series(qbin, dtype=pl.Int8),
            "seq_id": c.seq_id.astype(np.int32),
            "start": c.start.astype(np.int32),
            "order": (-c.max).astype(np.float64),
            "peak": c.peak.astype(np.int32),
        },
        schema_overrides={"split": pl.String, "kind": pl.String, "sampler": pl.String},
    ).with_columns(
        pl.when(pl.col("sampler") == "quantile").then(pl.col("quantile")).alias("quantile")
    )
