"""Counter-based randomness: every draw is a pure hash of (seed, latent, ...) so a latent's
examples do not depend on which other latents are processed with it, nor on shard sizes."""

from __future__ import annotations

import numpy as np

from autointerp.sampling.config import SPLITS

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLD = np.uint64(0x9E3779B97F4A7C15)


def _mix_inplace(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, in place on a uint64 array (wrapping arithmetic)."""
    tmp = np.empty_like(x)
    for shift, mult in ((30, _M1), (27, _M2), (31, None)):
        np.right_shift(x, np.uint64(shift), out=tmp)
        x ^= tmp
        if mult is not None:
            x *= mult
    return x


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    return _mix_inplace(np.array(x, dtype=np.uint64, copy=True))


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
        arrays = np.broadcast_arrays(*arrays) if arrays else [np.zeros((), dtype=np.int64)]
        out = np.full(arrays[0].shape, h, dtype=np.uint64)
        for a in arrays:
            part = np.array(a, dtype=np.uint64, copy=True)  # safe to update in place
            part += _GOLD
            out ^= part
            _mix_inplace(out)
    return out


def uniform01(*parts: np.ndarray | int) -> np.ndarray:
    """Deterministic floats in [0, 1) from a hash of the parts."""
    h = hash64(*parts)
    h >>= np.uint64(11)
    out = h.astype(np.float64)
    out *= 1.0 / (1 << 53)
    return out


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
