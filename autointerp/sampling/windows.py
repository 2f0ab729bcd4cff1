"""Windows over cached sequences: candidate activating windows of every latent of a shard
(run-length group-bys over the sorted nonzeros) and exact gathers of a window's tokens and
activations (searchsorted on the sorted nonzero keys). No Python loop over tokens or latents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autointerp.sampling.cachefiles import Nonzeros
from autointerp.sampling.hashing import draw_index

_TAG_SPREAD = 31


@dataclass(frozen=True)
class Geometry:
    """Window geometry: sequences of ``ctx_len`` tokens, windows of ``window_len``.

    ``first``: the first position a window may cover (1 when the cache excluded the BOS at
    position 0: a window never shows BOS, so its presence cannot tell activating windows from
    contrast ones). ``seed``: of the seeded window starts under 'spread' placement.
    """

    n_seqs: int
    ctx_len: int
    window_len: int
    placement: str  # "spread" | "peak" | "aligned"
    offset: int  # peak index inside a window under "peak" placement
    first: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.window_len > self.ctx_len - self.first:
            raise ValueError(
                f"window_len={self.window_len} exceeds the cache's ctx_len={self.ctx_len}"
                + (" less its BOS" if self.first else "")
                + f"; set sample.window_len <= {self.ctx_len - self.first}"
            )

    @property
    def last_start(self) -> int:
        return self.ctx_len - self.window_len

    def aligned_start(self, pos: np.ndarray) -> np.ndarray:
        """Start of the aligned block holding ``pos`` (blocks from ``first``; the last block
        is clamped to fit)."""
        block = (np.maximum(pos, self.first) - self.first) // self.window_len
        return np.minimum(block * self.window_len + self.first, self.last_start)

    def start_for(self, pos: np.ndarray, key: np.ndarray | int = 0) -> np.ndarray:
        """Window start for a token at ``pos`` that the window is built around. 'spread': a
        start drawn uniformly (seeded by ``key``, ``pos``) among those whose window holds
        ``pos``, so the token sits anywhere in the window; 'peak': at ``offset``."""
        if self.placement == "aligned":
            return self.aligned_start(pos)
        if self.placement == "spread":
            pos = np.asarray(pos, dtype=np.int64)
            lo = np.clip(pos - self.window_len + 1, self.first, self.last_start)
            hi = np.clip(pos, self.first, self.last_start)
            return lo + draw_index(hi - lo + 1, self.seed, _TAG_SPREAD, key, pos)
        return np.clip(pos - self.offset, self.first, self.last_start)

    @property
    def n_blocks(self) -> int:
        return -(-(self.ctx_len - self.first) // self.window_len)


@dataclass(frozen=True)
class Candidates:
    """Every window in which a latent fires: sorted by (latent, seq_id, start)."""

    latent: np.ndarray  # int32
    seq_id: np.ndarray  # int32
    start: np.ndarray  # int32
    max: np.ndarray  # float32: max activation inside the window
    peak: np.ndarray  # int32: absolute position of that max (first on ties)

    def __len__(self) -> int:
        return len(self.max)

    def take(self, idx: np.ndarray) -> Candidates:
        return Candidates(
            self.latent[idx], self.seq_id[idx], self.start[idx], self.max[idx], self.peak[idx]
        )


def _run_starts(*keys: np.ndarray) -> np.ndarray:
    """Indices where a run of equal key tuples begins (keys sorted lexicographically)."""
    n = len(keys[0])
    change = np.zeros(n, dtype=bool)
    change[:1] = True
    for k in keys:
        change[1:] |= k[1:] != k[:-1]
    return np.flatnonzero(change)


def _group_max(
    value: np.ndarray, pos: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Max value of each run and its position (the smallest on ties: rows are pos-sorted).

    One ``maximum.reduceat`` over ``value bits << 16 | (0xFFFF - pos)``: positive float32
    bits order like the floats, so the packed max is the max value at its first position.
    """
    packed = value.astype(np.float32, copy=False).view(np.int32).astype(np.int64)
    packed <<= 16
    packed |= 0xFFFF - pos.astype(np.int64)
    best = np.maximum.reduceat(packed, starts)
    gmax = (best >> 16).astype(np.int32).view(np.float32)
    peak = (0xFFFF - (best & 0xFFFF)).astype(np.int32)
    return gmax, peak


def candidate_windows(nz: Nonzeros, geo: Geometry) -> Candidates:
    """All windows where each latent fires, with the window's max and peak position.

    'spread' / 'peak': one window per (latent, sequence) holding the sequence's max, at a
    seeded random place ('spread') or at ``offset`` ('peak'), clamped to the sequence.
    'aligned': every block of ``window_len`` holding a nonzero (a clamped last block may
    overlap its neighbour; its rows are duplicated to it).
    """
    empty = np.zeros(0, dtype=np.int32)
    if len(nz) == 0:
        return Candidates(empty, empty, empty, np.zeros(0, np.float32), empty)
    if geo.placement != "aligned":
        starts = _run_starts(nz.latent, nz.seq_id)
        gmax, peak = _group_max(nz.value, nz.pos, starts)
        lat, seq = nz.latent[starts], nz.seq_id[starts]
        key = lat.astype(np.int64) * geo.n_seqs + seq
        return Candidates(lat, seq, geo.start_for(peak, key).astype(np.int32), gmax, peak)
    latent, seq, pos, value = nz.latent, nz.seq_id, nz.pos, nz.value
    start = geo.aligned_start(pos)
    full_end = geo.first + ((geo.ctx_len - geo.first) // geo.window_len) * geo.window_len
    if full_end != geo.ctx_len:  # the clamped last block also covers [last_start, full_end)
        extra = (pos >= geo.last_start) & (pos < full_end)
        latent = np.concatenate([latent, latent[extra]])
        seq = np.concatenate([seq, seq[extra]])
        pos = np.concatenate([pos, pos[extra]])
        value = np.concatenate([value, value[extra]])
        start = np.concatenate([start, np.full(int(extra.sum()), geo.last_start, start.dtype)])
        order = np.lexsort((pos, start, seq, latent))
        latent, seq, pos, value, start = (a[order] for a in (latent, seq, pos, value, start))
    starts = _run_starts(latent, seq, start)
    gmax, peak = _group_max(value, pos, starts)
    return Candidates(
        latent[starts], seq[starts], start[starts].astype(np.int32), gmax, peak.astype(np.int32)
    )


def _spans(
    nz_keys: np.ndarray, geo: Geometry, latent: np.ndarray, seq: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    base = (latent.astype(np.int64) * geo.n_seqs + seq) * geo.ctx_len + start
    lo = np.searchsorted(nz_keys, base, side="left")
    hi = np.searchsorted(nz_keys, base + geo.window_len, side="left")
    return base, lo, hi


def fires_in_window(
    nz_keys: np.ndarray, geo: Geometry, latent: np.ndarray, seq: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Whether ``latent`` has any nonzero in ``[start, start + window_len)`` of ``seq``.

    ``nz_keys`` are ``Nonzeros.keys`` of a shard holding ``latent`` (checked against the cache,
    never assumed).
    """
    _, lo, hi = _spans(nz_keys, geo, latent, seq, start)
    return hi > lo


def window_activations(
    nz_keys: np.ndarray,
    nz_value: np.ndarray,
    geo: Geometry,
    latent: np.ndarray,
    seq: np.ndarray,
    start: np.ndarray,
) -> np.ndarray:
    """Exact activations of ``latent`` over each window, ``[n, window_len]`` float32."""
    n = len(latent)
    out = np.zeros((n, geo.window_len), dtype=np.float32)
    if n == 0 or len(nz_keys) == 0:
        return out
    base, lo, hi = _spans(nz_keys, geo, latent, seq, start)
    counts = hi - lo
    total = int(counts.sum())
    if total == 0:
        return out
    rows = np.repeat(np.arange(n), counts)
    offsets = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
    idx = lo[rows] + offsets
    out[rows, nz_keys[idx] - base[rows]] = nz_value[idx]
    return out


def window_tokens(tokens: np.ndarray, seq: np.ndarray, start: np.ndarray, width: int) -> np.ndarray:
    """Token ids of each window, ``[n, width]`` int32."""
    return tokens[seq[:, None], start[:, None] + np.arange(width)[None, :]]
