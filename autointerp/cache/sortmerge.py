"""A linear merge of latent-sorted runs of nonzeros.

Every batch is sorted by latent (stably, so rows keep their (seq, pos) order) as it leaves the
encoder: on the device on CUDA, on the CPU otherwise (cache/encode.py). A chunk is then a list
of sorted runs in (seq, pos) order, and so is a latent shard (its slice of every chunk): both
are merged by ``merge_runs``, which moves each row once to a position computed from
per-latent counts instead of sorting again. The result is sorted by (latent, seq, pos).
"""

from __future__ import annotations

import numpy as np

from autointerp.cache.encode import Nonzeros


def latent_counts(latent: np.ndarray, start: int, end: int) -> np.ndarray:
    """Rows of each latent in ``[start, end)`` of a latent-sorted column (int64 ``[end-start]``)."""
    edges = np.searchsorted(latent, np.arange(start, end + 1, dtype=latent.dtype))
    return np.diff(edges)


def merge_runs(runs: list[Nonzeros], start: int, end: int) -> Nonzeros:
    """Merge latent-sorted runs of latents ``[start, end)``; ties keep the order of the runs.

    Row ``i`` of run ``r`` with latent ``l`` lands at (rows of latents before ``l``) + (rows of
    ``l`` in runs before ``r``) + (its rank among the rows of ``l`` in ``r``): one scatter per
    column, no comparison sort. The latent column is rebuilt from the counts.
    """
    runs = [r for r in runs if len(r)]
    if len(runs) == 1:
        return runs[0]
    counts = np.stack([latent_counts(r.latent, start, end) for r in runs]) if runs else None
    total = int(counts.sum()) if counts is not None else 0
    out = Nonzeros(
        latent=np.empty(0, np.int32),
        seq=np.empty(total, np.int32),
        pos=np.empty(total, np.int16),
        value=np.empty(total, np.float32),
    )
    if counts is None:
        return out
    per_latent = counts.sum(axis=0)
    base = np.cumsum(per_latent) - per_latent  # first row of each latent in the output
    dest = base + np.cumsum(counts, axis=0) - counts  # first row of (run, latent)
    for r, run in enumerate(runs):
        src = np.cumsum(counts[r]) - counts[r]  # first row of each latent in the run
        index = np.repeat(dest[r] - src, counts[r])
        index += np.arange(len(run), dtype=index.dtype)
        out.seq[index] = run.seq
        out.pos[index] = run.pos
        out.value[index] = run.value
        del index
    out.latent = np.repeat(np.arange(start, end, dtype=np.int32), per_latent)
    return out
