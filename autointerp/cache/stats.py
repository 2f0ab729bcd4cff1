"""Per-latent statistics of one latent shard, from its sorted nonzeros (numpy, one pass).

The shard's rows are sorted by (latent, seq_id, pos), so each latent is one contiguous
segment: counts, windows, max and mean are segment reductions, and the quantiles read the
segment's values once sorted (segment by segment).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from autointerp.cache.encode import Nonzeros
from autointerp.cache.layout import arrow_array
from autointerp.cache.sortmerge import latent_counts

QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)
STATS_SCHEMA = pa.schema(
    [
        ("latent", pa.int32()),
        ("n_active", pa.int64()),
        ("frequency", pa.float64()),
        ("n_windows", pa.int64()),
        ("max", pa.float32()),
        ("mean", pa.float32()),
        *[(f"q{round(q * 100):02d}", pa.float32()) for q in QUANTILES],
    ]
)


def _sortable(value: np.ndarray) -> np.ndarray:
    """uint32 keys that order like the float32 values (negative ones included)."""
    bits = value.view(np.uint32)
    flip = np.where(bits >> 31 == 1, np.uint32(0xFFFFFFFF), np.uint32(0x80000000))
    return bits ^ flip


def _unsortable(key: np.ndarray) -> np.ndarray:
    flip = np.where(key >> 31 == 1, np.uint32(0x80000000), np.uint32(0xFFFFFFFF))
    return (key ^ flip).view(np.float32)


MAX_BINS = 1 << 22  # histogram bins (latents x key ranges) before falling back to sorting


def order_statistics(key: np.ndarray, counts: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``key`` (uint32) holds segments of ``counts`` rows, one after the other; returns, for
    every segment ``i`` and column ``j``, the ``ranks[i, j]``-th smallest key of segment ``i``.

    A radix select: one histogram of every segment's keys by their top 16 bits finds the bin
    of each wanted rank; only the rows in those bins (a few per cent) are then sorted. Where
    the histogram would not be much smaller than the rows (keys spread over many top-bit
    values, many segments), every segment is sorted instead. Either way the result is exact.
    """
    n_seg = len(counts)
    first = np.cumsum(counts) - counts
    top = key >> np.uint32(16)
    low, high = (int(top.min()), int(top.max())) if len(key) else (0, 0)
    span = high - low + 1
    if n_seg * span > min(MAX_BINS, len(key) // 4):  # a histogram dearer than sorting
        ordered = key.copy()
        for a, m in zip(first.tolist(), counts.tolist(), strict=True):
            if m > 1:
                ordered[a : a + m].sort()  # in cache, one segment at a time
        return ordered[first[:, None] + ranks]
    segment = np.repeat(np.arange(n_seg, dtype=np.int64) * span - low, counts)
    segment += top  # the row's bin: (segment, top bits)
    del top
    hist = np.bincount(segment, minlength=n_seg * span)
    ends = np.cumsum(hist)
    wanted = first[:, None] + ranks  # ranks over all rows, segment after segment
    bins = np.searchsorted(ends, wanted, side="right")
    within = wanted - (ends[bins] - hist[bins])  # rank inside the bin
    chosen = np.zeros(n_seg * span, np.bool_)
    chosen[bins] = True
    rows = chosen[segment]
    picked = (segment[rows].astype(np.uint64) << np.uint64(32)) | key[rows]
    picked.sort()
    at = np.searchsorted(picked >> np.uint64(32), bins.astype(np.uint64)) + within
    return (picked[at] & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def shard_stats(nz: Nonzeros, start: int, end: int, n_tokens_counted: int) -> pa.Table:
    """One row per latent in ``[start, end)``; dead latents get zeros and null values.

    Quantiles use linear interpolation over the latent's nonzero activations (as numpy's and
    polars' ``linear``), computed in float64 and stored as float32.
    """
    counts = latent_counts(nz.latent, start, end)
    first = np.cumsum(counts) - counts
    live = counts > 0
    starts, n = first[live], counts[live]
    width = end - start
    n_windows = np.zeros(width, np.int64)
    if len(nz):
        new_window = np.empty(len(nz), np.bool_)  # one byte a row
        new_window[0] = True
        np.not_equal(nz.seq[1:], nz.seq[:-1], out=new_window[1:])
        new_window[starts] = True
        n_windows[live] = np.add.reduceat(new_window, starts, dtype=np.int64)
        del new_window
    columns: dict[str, np.ndarray] = {}
    if len(nz):
        columns["max"] = np.maximum.reduceat(nz.value, starts)
        columns["mean"] = np.add.reduceat(nz.value, starts, dtype=np.float64) / n
        signed = bool(np.signbit(nz.value).any())
        # non-negative floats order as their bits do: the keys are then a plain copy
        key = _sortable(nz.value) if signed else nz.value.view(np.uint32)
        at = (n - 1)[:, None] * np.array(QUANTILES)[None, :]  # [live latent, quantile]
        lo = np.floor(at).astype(np.int64)
        ranks = np.concatenate([lo, np.ceil(at).astype(np.int64)], axis=1)
        found = order_statistics(key, n, ranks)
        pairs = _unsortable(found) if signed else found.view(np.float32)
        a, b = np.split(pairs.astype(np.float64), 2, axis=1)
        for j, q in enumerate(QUANTILES):
            columns[f"q{round(q * 100):02d}"] = a[:, j] + (b[:, j] - a[:, j]) * (
                at[:, j] - lo[:, j]
            )
        del key
    arrays = [
        arrow_array(np.arange(start, end, dtype=np.int32)),
        arrow_array(counts.astype(np.int64)),
        arrow_array(counts / max(n_tokens_counted, 1)),
        arrow_array(n_windows),
    ]
    for name in ["max", "mean", *(f"q{round(q * 100):02d}" for q in QUANTILES)]:
        full = np.zeros(width, np.float32)
        if name in columns:
            full[live] = columns[name]
        arrays.append(arrow_array(full, valid=live))
    return pa.Table.from_arrays(arrays, schema=STATS_SCHEMA)
