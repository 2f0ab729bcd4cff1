"""Counter-based randomness: every draw is a pure hash of (seed, latent, ...) so a latent's
examples do not depend on which other latents are processed with it, nor on shard sizes."""

from __future__ import annotations

import numpy as np

from autointerp.sampling.config import SPLITS

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = x.copy()
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def hash64(*parts: np.ndarray | int) -> np.ndarray:
    """Hash of several integers / integer arrays (broadcast together) to uint64.

    Scalar parts are folded first, so each array part costs one mixing round.
    """
    with np.errstate(over="ignore"):
        h = np.uint64(0x243F6A8885A308D3)
        arrays = []
        for p in parts:
            if np.ndim(p) == 0:
                h = _mix(np.asarray([h ^ (np.uint64(int(p) & (2**64 - 1)) + _GOLD)]))[0]
            else:
                arrays.append(np.asarray(p, dtype=np.int64))
        arrays = np.broadcast_arrays(*arrays) if arrays else [np.zeros(())]
        out = np.full(arrays[0].shape, h, dtype=np.uint64)
        for a in arrays:
            out = _mix(out ^ (a.astype(np.uint64) + _GOLD))
    return out


def uniform01(*parts: np.ndarray | int) -> np.ndarray:
    """Deterministic floats in [0, 1) from a hash of the parts."""
    return (hash64(*parts) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def draw_index(n: np.ndarray | int, *parts: np.ndarray | int) -> np.ndarray:
    """Deterministic integers in ``[0, n)`` (``n`` broadcast; ``n`` must be > 0)."""
    return (uniform01(*parts) * np.asarray(n, dtype=np.float64)).astype(np.int64)


def split_of_seqs(n_seqs: int, fractions: tuple[float, float, float], seed: int) -> np.ndarray:
    """Split code (index into SPLITS) of every sequence, by a seeded hash of its seq_id.

    Splitting whole sequences keeps train/selection/test windows disjoint (no shared tokens)
    and gives a window the same split for every latent.
    """
    u = uniform01(seed, 0x5B1D, np.arange(n_seqs, dtype=np.int64))
    edges = np.cumsum(np.asarray(fractions, dtype=np.float64))[:-1]
    return np.searchsorted(edges, u, side="right").astype(np.int8)


__all__ = ["SPLITS", "hash64", "uniform01", "draw_index", "split_of_seqs"]
