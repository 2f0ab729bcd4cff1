"""The disk a cache will take, checked against the free space before the forward pass.

A cache holds its nonzeros twice at its peak: the spill chunks of the forward pass (fixed
width, uncompressed) stay on disk until the merge has written every latent shard from them.
Caching 10^8 tokens at L0 32 peaks at ~47 GiB, so the stage says so, and refuses to start when
the disk cannot hold it, rather than failing on a full disk after the forward pass.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autointerp.cache.budget import GB, MB, TOKEN_BYTES
from autointerp.cache.errors import CacheDiskError

log = logging.getLogger(__name__)

# A spill chunk: int32 seq_id + float32 value + int16 pos a nonzero (cache/spill.py), plus
# per-latent counts; uncompressed.
SPILL_BYTES_PER_NONZERO = 10
# The latent shards' Parquet: the float32 values do not compress, positions and sequence ids
# do (measured on the demo cache: 5.9 B a nonzero at 262,144 tokens).
SHARD_BYTES_PER_NONZERO = 6


@dataclass(frozen=True)
class DiskNeed:
    """Bytes one hookpoint's cache takes at its peak, and what of it is already written."""

    root: Path
    nonzeros: float
    tokens: int

    @property
    def peak_bytes(self) -> float:
        per = SPILL_BYTES_PER_NONZERO + SHARD_BYTES_PER_NONZERO
        return self.nonzeros * per + self.tokens * TOKEN_BYTES

    def written_bytes(self) -> int:
        """What a killed run already wrote under the cache folder (it counts toward the peak)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _size(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= GB / 10 else f"{n / MB:.1f} MB"


def check_disk(needs: Sequence[DiskNeed], n_tokens: int) -> None:
    """Log the cache's peak disk use; raise ``CacheDiskError`` when a file system has less
    free space than what is still to be written there. The cache folders exist already
    (``state.begin``)."""
    by_device: dict[int, list[DiskNeed]] = {}
    for need in needs:
        by_device.setdefault(os.stat(need.root).st_dev, []).append(need)
    for group in by_device.values():
        where = group[0].root
        peak = sum(n.peak_bytes for n in group)
        todo = max(0.0, peak - sum(n.written_bytes() for n in group))
        free = shutil.disk_usage(where).free
        log.info(
            "disk: the cache peaks at ~%s in %s until the merge ends (%s still to write), %s free",
            _size(peak),
            where,
            _size(todo),
            _size(free),
        )
        if todo > free:
            fits = int(n_tokens * free / peak)
            raise CacheDiskError(
                f"the cache needs ~{_size(todo)} more disk in {where} (spill chunks and latent "
                f"shards are both on disk until the merge ends) but {_size(free)} are free: "
                f"free space, cache fewer tokens (--n-tokens {fits:,} would fit in a new run "
                "directory), or use a --run-dir on a larger disk"
            )
