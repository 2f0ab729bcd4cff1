"""Rows per latent of a latent-sorted column (the merge itself: cache/spill.py ``gather_index``).

Every batch is sorted by latent (stably, so rows keep their (seq, pos) order) as it leaves the
encoder: on the device on CUDA, on the CPU otherwise (cache/encode.py). Batches and chunks are
then runs in (seq, pos) order, merged by one gather per shard, each row moved once to a place
computed from per-(run, latent) counts instead of sorting again.
"""

from __future__ import annotations

import numpy as np


def latent_counts(latent: np.ndarray, start: int, end: int) -> np.ndarray:
    """Rows of each latent in ``[start, end)`` of a latent-sorted column (int64 ``[end-start]``)."""
    edges = np.searchsorted(latent, np.arange(start, end + 1, dtype=latent.dtype))
    return np.diff(edges)
