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


def _packed_keys(latent: np.ndarray, vmax: np.ndarray) -> np.ndarray | None:
    """Unique int64 per candidate ordering like (latent asc, max desc, index asc), or None
    when (local latent, max bits, index) do not fit in 63 bits."""
    n = len(latent)
    local = (latent - latent[0]).astype(np.int64)
    idx_bits = max(1, (n - 1).bit_length())
    if max(1, int(local[-1]).bit_length()) + 31 + idx_bits > 63:
        return None
    key = local << (31 + idx_bits)
    inv = 0x7FFFFFFF - vmax.astype(np.float32, copy=False).view(np.int32).astype(np.int64)
    inv <<= idx_bits
    key |= inv
    key |= np.arange(n, dtype=np.int64)
    return key


def _ranked_flags(
    key: np.ndarray,
    starts: np.ndarray,
    counts: np.ndarray,
    split: np.ndarray,
    nb: int,
    n_topk: list[int],
) -> tuple[np.ndarray, np.ndarray]:
    """(quantile bin, top-k flag) of every candidate from per-latent order statistics.

    Bin of the candidate at descending rank ``r`` of ``n``: ``(n - 1 - r) * nb // n``, i.e.
    the number of ``j >= 1`` with ``r < n - ceil(j * n / nb)``. The keys at those ranks (and
    at each split's ``topk``-th rank) come from ``np.partition`` per latent -- no full sort.
    """
    n = len(key)
    cut_keys: list[np.ndarray] = []
    top_cut = np.full((len(n_topk), len(starts)), -1, dtype=np.int64)
    for i, (s0, c) in enumerate(zip(starts.tolist(), counts.tolist(), strict=True)):
        seg = key[s0 : s0 + c]
        ranks = [r for j in range(1, nb) if (r := c - 1 - (j * c + nb - 1) // nb) >= 0]
        if ranks:  # duplicates kept: several bins may start at the same rank
            cut_keys.append(np.partition(seg, sorted(set(ranks)))[ranks])
        sp = split[s0 : s0 + c]
        for k, t in enumerate(n_topk):
            if t:
                mine = seg[sp == k]
                if len(mine) <= t:
                    top_cut[k, i] = np.iinfo(np.int64).max
                else:
                    top_cut[k, i] = np.partition(mine, t - 1)[t - 1]
    cuts = np.concatenate(cut_keys) if cut_keys else np.zeros(0, np.int64)
    # bin = how many of the latent's cut keys are >= the key (cuts are latent-major, sorted)
    cuts.sort()
    lat_min = np.minimum.reduceat(key, starts)
    lat_end = np.searchsorted(cuts, np.append(lat_min[1:], np.iinfo(np.int64).max))
    qbin = (np.repeat(lat_end, counts) - np.searchsorted(cuts, key)).astype(np.int8)
    topk = np.zeros(n, dtype=bool)
    for k, t in enumerate(n_topk):
        if t:
            topk |= (split == k) & (key <= np.repeat(top_cut[k], counts))
    return qbin, topk


def select_activating(
    cands: Candidates, split_of_seq: np.ndarray, cfg: SampleConfig, seed: int
) -> pl.DataFrame:
    """Activating rows of every latent in ``cands``.

    Quantile bins are equal-count bins of the latent's window max activations over the whole
    cache (bin 0 weakest, ``n_quantiles - 1`` strongest), the same bins for every split;
    ranks order by max desc, then (seq_id, start).
    """
    n = len(cands)
    if n == 0:
        return _frame(cands, np.zeros(0, np.int8), np.zeros(0, np.int8), np.zeros(0, np.int8))
    latent = cands.latent
    starts = run_starts(latent)
    counts = np.diff(np.append(starts, n))
    split = split_of_seq[cands.seq_id]
    mixes = [cfg.mix(s) for s in SPLITS]
    nb = cfg.n_quantiles
    key = _packed_keys(latent, cands.max)
    if key is None:  # huge shard: a stable sort instead of packed keys
        inv = 0x7FFFFFFF - cands.max.view(np.int32).astype(np.int64)
        order = np.lexsort((np.arange(n), inv, latent))
        key = np.empty(n, dtype=np.int64)
        key[order] = np.arange(n)
    qbin, topk = _ranked_flags(key, starts, counts, split, nb, [mx.topk for mx in mixes])

    lat_local = (latent - latent[0]).astype(np.int64)
    wkey = (latent.astype(np.int64) * (1 << 31) + cands.seq_id) * (1 << 16) + cands.start
    quant = np.zeros(n, dtype=bool)
    if any(mx.quantile for mx in mixes):
        targets = np.stack([quantile_targets(mx.quantile, nb) for mx in mixes])
        need_q = targets[split, qbin]
        need_q[topk] = 0
        group_q = (lat_local * len(SPLITS) + split) * nb + qbin
        quant = pick_smallest(group_q, need_q, uniform01(seed, _TAG_QUANTILE, wkey))

    unif = np.zeros(n, dtype=bool)
    if any(mx.uniform for mx in mixes):
        need_u = np.array([mx.uniform for mx in mixes])[split]
        need_u[topk | quant] = 0
        r_u = uniform01(seed, _TAG_UNIFORM, wkey)
        unif = pick_smallest(lat_local * len(SPLITS) + split, need_u, r_u)

    sampler = np.full(n, -1, dtype=np.int8)
    sampler[topk] = 0
    sampler[quant] = 1
    sampler[unif] = 2
    sel = np.flatnonzero(sampler >= 0)
    return _frame(cands.take(sel), split[sel], sampler[sel], qbin[sel])


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
