"""Latent matching between two coders: chunked similarity, best match and one-to-one assignment.

Similarities are never held as a dense ``n x m`` matrix unless it fits ``budget_mb``:
:func:`decoder_similarity` walks row blocks of A against all of B and keeps, per latent, its
best partner on the other side (both directions from one pass) plus the values at requested
``(a, b)`` pairs. When the dense matrix fits the budget it is also kept, and :func:`match`
solves the optimal one-to-one assignment with ``scipy.optimize.linear_sum_assignment``;
otherwise each latent of A is paired with its best match in B.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)
BLOCK_MB = 64  # a block of A rows x all of B, float32


@dataclass
class Similarity:
    """What one pass over all (a, b) pairs leaves: best partners and looked-up pairs.

    ``best_a[i]``/``best_a_score[i]``: latent of B most similar to latent i of A (-1/NaN when
    none is defined, e.g. a dead latent); ``best_b``/``best_b_score`` the other way.
    ``dense`` is the full ``[n_a, n_b]`` float32 matrix when it fit the budget (missing pairs
    are NaN -> not matchable). ``lookups`` holds the values at the pairs asked for, in order.
    """

    best_a: np.ndarray
    best_a_score: np.ndarray
    best_b: np.ndarray
    best_b_score: np.ndarray
    dense: np.ndarray | None = None
    lookups: list[np.ndarray] = field(default_factory=list)


@dataclass
class Matching:
    """Matched pairs: ``a[k]`` <-> ``b[k]`` with ``score[k]``; ``method`` is ``assignment``
    (optimal one-to-one) or ``best`` (each latent of A with its best match in B)."""

    a: np.ndarray
    b: np.ndarray
    score: np.ndarray
    method: str
    mutual: np.ndarray  # a[k] and b[k] are each other's best match


def dense_fits(n_a: int, n_b: int, budget_mb: float) -> bool:
    """Whether the dense matrix (float32, plus the float64 copy the solver makes) fits."""
    return n_a * n_b * 12 <= budget_mb * 2**20


def normalise(rows: np.ndarray) -> np.ndarray:
    """Unit-norm float32 rows (zero rows stay zero)."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.where(norms > 0, norms, 1.0)


def _lookup_pairs(
    block: np.ndarray, start: int, stop: int, pairs: np.ndarray, out: np.ndarray
) -> None:
    sel = (pairs[:, 0] >= start) & (pairs[:, 0] < stop)
    if sel.any():
        out[sel] = block[pairs[sel, 0] - start, pairs[sel, 1]]


def decoder_similarity(
    dec_a: np.ndarray,
    dec_b: np.ndarray,
    pairs: list[np.ndarray] | None = None,
    budget_mb: float = 512.0,
    keep_dense: bool = True,
    block_mb: float = BLOCK_MB,
) -> Similarity:
    """Cosine similarity of decoder rows ``[n_a, d]`` and ``[n_b, d]``, in row blocks of A."""
    if dec_a.shape[1] != dec_b.shape[1]:
        raise ValueError(
            f"decoder widths differ ({dec_a.shape[1]} vs {dec_b.shape[1]}): the coders do not "
            "share a space; match by activation correlation instead (--by activation)"
        )
    a, b = normalise(dec_a), normalise(dec_b)
    n_a, n_b = len(a), len(b)
    pairs = [np.asarray(p, dtype=np.int64).reshape(-1, 2) for p in pairs or []]
    lookups = [np.full(len(p), np.nan, dtype=np.float32) for p in pairs]
    dense = (
        np.empty((n_a, n_b), dtype=np.float32)
        if keep_dense and dense_fits(n_a, n_b, budget_mb)
        else None
    )
    best_a = np.full(n_a, -1, dtype=np.int64)
    best_a_score = np.full(n_a, np.nan, dtype=np.float32)
    best_b = np.full(n_b, -1, dtype=np.int64)
    best_b_score = np.full(n_b, -np.inf, dtype=np.float32)
    rows = max(1, int(block_mb * 2**20 // (4 * max(n_b, 1))))
    bt = np.ascontiguousarray(b.T)
    for start in range(0, n_a, rows):
        stop = min(n_a, start + rows)
        block = a[start:stop] @ bt  # [rows, n_b]
        arg = block.argmax(axis=1)
        best_a[start:stop] = arg
        best_a_score[start:stop] = block[np.arange(stop - start), arg]
        col = block.argmax(axis=0)
        col_score = block[col, np.arange(n_b)]
        better = col_score > best_b_score
        best_b[better] = col[better] + start
        best_b_score[better] = col_score[better]
        for p, out in zip(pairs, lookups, strict=True):
            _lookup_pairs(block, start, stop, p, out)
        if dense is not None:
            dense[start:stop] = block
    best_b_score[np.isinf(best_b_score)] = np.nan
    return Similarity(best_a, best_a_score, best_b, best_b_score, dense, lookups)


def match(sim: Similarity, n_a: int, n_b: int) -> Matching:
    """Optimal one-to-one assignment when ``sim.dense`` is there, else best match per A latent.

    Pairs whose similarity is undefined (NaN: never co-active, dead latents) are not matched.
    """
    if sim.dense is not None and n_a and n_b:
        from scipy.optimize import linear_sum_assignment

        cost = np.nan_to_num(sim.dense, nan=-1e6)
        rows, cols = linear_sum_assignment(cost, maximize=True)
        score = sim.dense[rows, cols]
        method = "assignment"
    else:
        rows = np.arange(n_a)
        cols = sim.best_a
        score = sim.best_a_score
        method = "best"
    keep = (cols >= 0) & np.isfinite(score)
    rows, cols, score = rows[keep], cols[keep], score[keep]
    mutual = (sim.best_a[rows] == cols) & (sim.best_b[cols] == rows)
    log.info("matched %d pairs by %s (%d mutual best)", len(rows), method, int(mutual.sum()))
    return Matching(
        rows.astype(np.int64), cols.astype(np.int64), score.astype(np.float32), method, mutual
    )


def random_pairs(n_a: int, n_b: int, n: int, seed: int) -> np.ndarray:
    """``n`` seeded random ``(a, b)`` pairs (the baseline's pairs)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, n_a, n), rng.integers(0, n_b, n)], axis=1)


def pair_cosine(dec_a: np.ndarray, dec_b: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Decoder cosine of given pairs (cheap: one dot product per pair)."""
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    a = normalise(dec_a[pairs[:, 0]])
    b = normalise(dec_b[pairs[:, 1]])
    return np.einsum("ij,ij->i", a, b).astype(np.float32)
