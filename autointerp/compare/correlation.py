"""Pearson correlation of latent activations between two caches of the same tokens, streamed.

Over the ``N`` counted token positions (``n_tokens_counted`` of meta.json), with ``S_i`` the sum
and ``Q_i`` the sum of squares of latent i, and ``S_ij`` the sum of ``x_i * x_j`` over the
positions where both are nonzero (every other position contributes 0 to the cross sum):

    r_ij = (N S_ij - S_i S_j) / sqrt((N Q_i - S_i^2) (N Q_j - S_j^2))

which is exact. Only co-active pairs have ``S_ij > 0``; a pair that never co-fires has
``r_ij = -S_i S_j / ... <= 0`` and is never a match, so best matches come from the sparse
cross sums alone (looked-up pairs get their exact value, co-active or not). A latent that
never fires has no defined correlation (NaN).

Memory: A is read in blocks of whole shards holding at most ``block_nonzeros`` nonzeros; for
each block B is streamed shard by shard and ``X_A^T X_B`` is a sparse product over the token
positions present in either (never an ``N``-row matrix). B's shards are read once per A block.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import pyarrow.parquet as pq
import scipy.sparse as sp

from autointerp.cache import ActivationCache
from autointerp.compare.matching import Similarity, dense_fits

log = logging.getLogger(__name__)
SAME_TOKENS_KEYS = ("ctx_len", "n_seqs", "n_tokens_counted", "exclude_bos")


def tokens_digest(cache: ActivationCache) -> str:
    """sha256 of the token ids of ``tokens.parquet``, streamed by record batch."""
    h = hashlib.sha256()
    for batch in pq.ParquetFile(cache.layout.tokens).iter_batches(columns=["tokens"]):
        flat = batch.column(0).flatten().to_numpy(zero_copy_only=False)
        h.update(np.ascontiguousarray(flat, dtype=np.int32).tobytes())
    return h.hexdigest()


def same_tokens(a: ActivationCache, b: ActivationCache) -> str | None:
    """None when both caches hold the same token windows, else the reason they do not."""
    for key in SAME_TOKENS_KEYS:
        if a.meta.get(key) != b.meta.get(key):
            return f"{key} differs ({a.meta.get(key)} vs {b.meta.get(key)})"
    if tokens_digest(a) != tokens_digest(b):
        return "tokens.parquet holds different token ids"
    return None


def _blocks(cache: ActivationCache, block_nonzeros: int) -> list[tuple[int, int]]:
    """Consecutive shards grouped so a group holds about ``block_nonzeros`` nonzeros."""
    active = cache.stats().sort("latent")["n_active"].to_numpy()
    blocks: list[tuple[int, int]] = []
    start, size = None, 0
    for s, e in cache.shards:
        n = int(active[s:e].sum())
        if start is not None and size + n > block_nonzeros:
            blocks.append((start, s))
            start, size = None, 0
        if start is None:
            start = s
        size += n
    if start is not None:
        blocks.append((start, cache.n_latents))
    return blocks


def _read(cache: ActivationCache, start: int, end: int, ctx: int):
    df = cache.read_latents(start, end)
    lat = df["latent"].to_numpy().astype(np.int64) - start
    tok = df["seq_id"].to_numpy().astype(np.int64) * ctx + df["pos"].to_numpy()
    val = df["value"].to_numpy().astype(np.float64)
    s = np.bincount(lat, weights=val, minlength=end - start)
    q = np.bincount(lat, weights=val * val, minlength=end - start)
    return lat, tok, val, s, q


def _corr(n: float, s_ab, s_a, s_b, q_a, q_b):
    var_a = n * q_a - s_a * s_a
    var_b = n * q_b - s_b * s_b
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (n * s_ab - s_a * s_b) / np.sqrt(var_a * var_b)
    return np.where((var_a > 0) & (var_b > 0), r, np.nan)


def activation_correlation(
    cache_a: ActivationCache,
    cache_b: ActivationCache,
    pairs: list[np.ndarray] | None = None,
    budget_mb: float = 512.0,
    keep_dense: bool = True,
    block_nonzeros: int = 5_000_000,
) -> Similarity:
    """Best partners (by Pearson r) both ways, exact r at ``pairs``, and the dense matrix of
    co-active pairs (NaN elsewhere) when it fits ``budget_mb``."""
    n = float(cache_a.meta["n_tokens_counted"])
    ctx = int(cache_a.meta["ctx_len"])
    n_a, n_b = cache_a.n_latents, cache_b.n_latents
    pairs = [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in pairs or []]
    lookups = [np.full(len(p), np.nan, dtype=np.float32) for p in pairs]
    dense = None
    if keep_dense and dense_fits(n_a, n_b, budget_mb):
        dense = np.full((n_a, n_b), np.nan, dtype=np.float32)
    best_a = np.full(n_a, -1, dtype=np.int64)
    best_a_score = np.full(n_a, -np.inf)
    best_b = np.full(n_b, -1, dtype=np.int64)
    best_b_score = np.full(n_b, -np.inf)
    for a0, a1 in _blocks(cache_a, block_nonzeros):
        lat_a, tok_a, val_a, s_a, q_a = _read(cache_a, a0, a1, ctx)
        for b0, b1 in cache_b.shards:
            lat_b, tok_b, val_b, s_b, q_b = _read(cache_b, b0, b1, ctx)
            toks, inv = np.unique(np.concatenate([tok_a, tok_b]), return_inverse=True)
            xa = sp.csr_matrix((val_a, (lat_a, inv[: len(tok_a)])), shape=(a1 - a0, len(toks)))
            xb = sp.csc_matrix((val_b, (inv[len(tok_a) :], lat_b)), shape=(len(toks), b1 - b0))
            cross = (xa @ xb).tocoo()
            ra, cb = cross.row.astype(np.int64), cross.col.astype(np.int64)
            r = _corr(n, cross.data, s_a[ra], s_b[cb], q_a[ra], q_b[cb])
            ok = np.isfinite(r)
            ra, cb, r = ra[ok], cb[ok], r[ok]
            if dense is not None:
                dense[ra + a0, cb + b0] = r
            _update_best(ra + a0, cb + b0, r, best_a, best_a_score)
            _update_best(cb + b0, ra + a0, r, best_b, best_b_score)
            csr = cross.tocsr() if pairs else None
            for p, out in zip(pairs, lookups, strict=True):
                sel = (p[:, 0] >= a0) & (p[:, 0] < a1) & (p[:, 1] >= b0) & (p[:, 1] < b1)
                if not sel.any():
                    continue
                pa_, pb_ = p[sel, 0] - a0, p[sel, 1] - b0
                s_ab = np.asarray(csr[pa_, pb_]).ravel() if cross.nnz else 0.0
                out[sel] = _corr(n, s_ab, s_a[pa_], s_b[pb_], q_a[pa_], q_b[pb_])
        log.info("activation correlation: latents %d-%d of A done", a0, a1)
    best_a_score[best_a < 0] = np.nan
    best_b_score[best_b < 0] = np.nan
    return Similarity(
        best_a,
        best_a_score.astype(np.float32),
        best_b,
        best_b_score.astype(np.float32),
        dense,
        lookups,
    )


def _update_best(keys, partners, r, best, best_score) -> None:
    """Raise ``best_score[k]`` to the max ``r`` of ``keys == k`` (and record the partner)."""
    if not len(r):
        return
    order = np.lexsort((-r, keys))
    first = np.unique(keys[order], return_index=True)[1]
    idx = order[first]
    k, v = keys[idx], r[idx]
    better = v > best_score[k]
    best[k[better]] = partners[idx][better]
    best_score[k[better]] = v[better]
