"""One memory budget for the cache stage: chunk and shard sizes in bytes, from measurements.

``cache.max_memory_gb`` bounds the process's resident memory. What the model, the coders and
one batch take is measured on the first batch (the peak RSS of the process while it ran); the
rest is shared by the chunk that fills, the chunk the spill writer writes, and (later) the
latent shard the merge sorts. Their sizes follow from the L0 measured on that batch, in bytes
per nonzero, so they do not depend on ``ctx_len``, L0 or ``n_tokens``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import os
import resource
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

from autointerp.cache.errors import CacheBudgetError
from autointerp.config import CacheConfig

log = logging.getLogger(__name__)

GB = 1 << 30
MB = 1 << 20
NONZERO_BYTES = 14  # int32 latent + int32 seq_id + int16 pos + float32 value
# The chunk that fills (its columns: 14 B) plus the chunk being written (remaining columns,
# the sort order, the sorted copies, Parquet buffers: ~34 B at its peak) and allocator slack:
# measured 55-92 B a nonzero above the first batch's peak (demo SAE, ctx_len 256).
FORWARD_BYTES_PER_NONZERO = 96
# One latent shard in the merge: its row groups, the sort order, the sorted copy, the
# statistics' group-by (polars) and the Parquet writer: measured ~100 B a nonzero.
MERGE_BYTES_PER_NONZERO = 100
TOKEN_BYTES = 4
MAX_CHUNKS = 256  # larger runs get larger chunks (while the budget allows): few files to merge
LEGACY_CHUNK_WINDOWS = 2048  # chunk size of caches started before chunks were sized in bytes


@dataclass(frozen=True)
class MemoryPlan:
    """Resolved sizes; ``chunk_windows`` is a multiple of the batch size unless capped."""

    budget_bytes: int
    fixed_bytes: int  # model, coders, libraries and one batch: measured
    chunk_windows: int
    chunk_nonzeros: int  # expected, every hookpoint together
    shard_target_rows: int  # nonzeros per latent shard aimed at

    @property
    def available_bytes(self) -> int:
        return self.budget_bytes - self.fixed_bytes

    def describe(self, ctx_len: int) -> str:
        chunk_mb = self.chunk_nonzeros * NONZERO_BYTES / MB
        return (
            f"memory budget {self.budget_bytes / GB:.2f} GB: model, coders and one batch take "
            f"{self.fixed_bytes / GB:.2f} GB; chunks of {self.chunk_windows} windows "
            f"({self.chunk_windows * ctx_len:,} tokens, ~{self.chunk_nonzeros:,} nonzeros, "
            f"~{chunk_mb:.0f} MB; the writer holds one while the next fills); latent shards of "
            f"<= {self.shard_target_rows:,} nonzeros in the merge"
        )


def plan_memory(
    cc: CacheConfig,
    nonzeros_per_window: float,
    n_windows: int,
    fixed_bytes: int,
) -> MemoryPlan:
    """Chunk and shard sizes that keep the stage within ``cc.max_memory_gb``.

    ``nonzeros_per_window`` is the measured L0 (summed over hookpoints) times the positions
    counted per window. Raises CacheBudgetError when not even one batch fits.
    """
    budget = int(cc.max_memory_gb * GB)
    available = budget - fixed_bytes
    per_window = max(nonzeros_per_window, 1e-9)
    window_bytes = per_window * FORWARD_BYTES_PER_NONZERO + 3 * cc.ctx_len * TOKEN_BYTES
    bs = cc.batch_size
    if available < window_bytes * bs:
        need = (fixed_bytes + window_bytes * bs) / GB
        raise CacheBudgetError(
            f"cache.max_memory_gb={cc.max_memory_gb:g} is too small for one batch: the model, "
            f"the coders and a batch of {bs} windows of {cc.ctx_len} tokens take "
            f"{need:.2f} GB; pass a smaller --batch-size or a larger --max-memory-gb"
        )
    target_rows = max(cc.chunk_target_rows, per_window * n_windows / MAX_CHUNKS)
    windows = int(min(target_rows / per_window, available / window_bytes))
    windows = max(bs, windows - windows % bs)
    windows = min(windows, bs * math.ceil(n_windows / bs))
    if cc.chunk_windows is not None:
        windows = min(windows, cc.chunk_windows)
    shard_rows = max(1, min(cc.shard_target_rows, available // MERGE_BYTES_PER_NONZERO))
    return MemoryPlan(
        budget_bytes=budget,
        fixed_bytes=fixed_bytes,
        chunk_windows=windows,
        chunk_nonzeros=round(windows * per_window),
        shard_target_rows=int(shard_rows),
    )


def merge_workers(budget_bytes: int | None, largest_shard_rows: int) -> int:
    """Shards merged at once: one more than the cores (each waits for its direct reads and
    writes part of the time, cache/directio.py), as many as the budget holds beside what the
    process holds now; 1 on one core or without a budget."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if budget_bytes is None or (cores or 1) < 2:
        return 1
    available = budget_bytes - rss_bytes()
    fits = available // max(1, largest_shard_rows * MERGE_BYTES_PER_NONZERO)
    return int(max(1, min((cores or 1) + 1, fits)))


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_rss() -> None:
    """Start a new peak-RSS measurement (Linux: VmHWM := VmRSS); elsewhere a no-op."""
    with suppress(OSError):
        _CLEAR_REFS.write_text("5")


def peak_rss_bytes() -> int:
    """Peak RSS since the last ``reset_peak_rss`` (Linux), else of the process's lifetime."""
    with suppress(OSError, ValueError):
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return max(int(peak) * 1024, rss_bytes())


def rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_HEAP_DEFAULT = 128 * 1024


@contextlib.contextmanager
def steady_heap() -> Iterator[None]:
    """Keep freed memory in the process while the stage runs; give it back at the end.

    Every batch and shard allocates and frees temporaries of the same sizes. glibc gives the
    top of its heaps and every block over its mmap threshold back to the kernel at once, and
    the next one faults the pages in again: on the 2-core machine that cost ~0.4 µs of system
    CPU a token (``scripts/bench_cache.py --synthetic``). Here blocks up to 32 MB come from
    the heaps and the heaps are not trimmed until the end (``malloc_trim``), so the peak
    resident size stays what the stage holds at once. The cyclic garbage collector is off
    too (the stage makes no cycles; its passes over every object of the process cost ~4%).
    """
    libc = None
    with suppress(OSError, AttributeError):  # not glibc: leave the allocator alone
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 32 * MB)
        libc.mallopt(_M_TRIM_THRESHOLD, (1 << 31) - 1)  # an int: 2 GB
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        if libc is not None:
            libc.mallopt(_M_MMAP_THRESHOLD, _HEAP_DEFAULT)
            libc.mallopt(_M_TRIM_THRESHOLD, _HEAP_DEFAULT)
            libc.malloc_trim(0)
