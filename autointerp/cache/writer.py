"""Resumable spill files: one Parquet file per chunk of windows, written by a background thread.

A chunk file holds the chunk's nonzeros sorted by (latent, seq_id, pos), with exactly one row
group per latent shard range, so the merge reads only its own row group of every chunk. Files
are written to a temp name and renamed: a file that exists is complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import queue
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from autointerp.cache.encode import Nonzeros
from autointerp.cache.layout import NONZERO_SCHEMA, CacheLayout, write_parquet_atomic

log = logging.getLogger(__name__)

KILL_AFTER_CHUNKS_ENV = "AUTOINTERP_KILL_AFTER_CHUNKS"
_SPILL_COMPRESSION = "lz4"  # temporary files: fast beats small


COLUMNS = ("latent", "seq", "pos", "value")


@dataclass
class Chunk:
    """The windows of one chunk and, per hookpoint, the nonzero columns of its batches."""

    index: int
    seq_offset: int
    n_windows: int = 0
    tokens: list[np.ndarray] = field(default_factory=list)
    columns: dict[str, dict[str, list[np.ndarray]]] = field(default_factory=dict)

    def add(self, windows: np.ndarray, nz: dict[str, Nonzeros]) -> None:
        """Append a batch (its ``seq`` counts from the batch's first window)."""
        self.tokens.append(windows)
        for spec, n in nz.items():
            cols = self.columns.setdefault(spec, {c: [] for c in COLUMNS})
            n.seq += np.int32(self.seq_offset + self.n_windows)
            for c in COLUMNS:
                cols[c].append(getattr(n, c))
        self.n_windows += len(windows)


@dataclass
class HookpointTarget:
    layout: CacheLayout
    shards: list[tuple[int, int]]
    n_latents: int


def chunk_table(columns: dict[str, list[np.ndarray]] | None, n_latents: int) -> pa.Table:
    """Concatenate batches and sort stably by latent (rows are already in (seq, pos) order).

    The batch arrays are released column by column as the sorted copies are made, so the peak
    is the unsorted columns, the sort order and one sorted column more (~34 bytes a nonzero).
    """
    if not columns or not columns["latent"]:
        return NONZERO_SCHEMA.empty_table()
    latent = np.concatenate(columns.pop("latent"))
    if n_latents <= 1 << 16:
        order = np.argsort(latent.astype(np.uint16), kind="stable")  # radix sort
    else:
        order = np.argsort(latent, kind="stable")
    arrays = [pa.array(latent[order], pa.int32())]
    del latent
    for name, dtype in (("seq", pa.int32()), ("pos", pa.int16()), ("value", pa.float32())):
        arrays.append(pa.array(np.concatenate(columns.pop(name))[order], dtype))
    return pa.Table.from_arrays(arrays, schema=NONZERO_SCHEMA)


def tokens_table(windows: list[np.ndarray], seq_offset: int) -> pa.Table:
    arr = np.concatenate(windows).astype(np.int32, copy=False)
    n, ctx = arr.shape
    values = pa.array(arr.reshape(-1), pa.int32())
    tokens = pa.FixedSizeListArray.from_arrays(values, ctx).cast(pa.list_(pa.int32()))
    seq = pa.array(np.arange(seq_offset, seq_offset + n, dtype=np.int32), pa.int32())
    return pa.table({"seq_id": seq, "tokens": tokens})


def write_chunk(chunk: Chunk, targets: dict[str, HookpointTarget]) -> None:
    """Write the chunk's spill file and token file of every hookpoint (skipping existing ones)."""
    tokens = None
    for spec, target in targets.items():
        path = target.layout.chunk(chunk.index)
        if not path.exists():
            table = chunk_table(chunk.columns.pop(spec, None), target.n_latents)
            lat = table.column("latent").to_numpy()
            bounds = np.searchsorted(lat, [s for s, _ in target.shards] + [target.n_latents])
            sizes = np.diff(bounds).tolist()
            del lat
            write_parquet_atomic(table, path, sizes, compression=_SPILL_COMPRESSION)
            del table
        tok_path = target.layout.token_chunk(chunk.index)
        if not tok_path.exists():
            tokens = tokens if tokens is not None else tokens_table(chunk.tokens, chunk.seq_offset)
            write_parquet_atomic(tokens, tok_path, compression=_SPILL_COMPRESSION)


class ChunkWriter:
    """Writes chunks on a background thread while the next batches run through the model.

    It holds at most one chunk: ``put`` waits until the previous chunk is written, so memory
    holds the chunk being written and the one filling, never a queue of them.
    """

    def __init__(self, targets: dict[str, HookpointTarget]) -> None:
        self.targets = targets
        self._queue: queue.Queue[Chunk | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._written = 0
        self._kill_after = int(os.environ.get(KILL_AFTER_CHUNKS_ENV, "0") or 0)
        self._thread = threading.Thread(target=self._loop, name="chunk-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            chunk = self._queue.get()
            try:
                if chunk is None:
                    return
                if self._error is None:
                    write_chunk(chunk, self.targets)
                    del chunk
                    self._after_write()
            except BaseException as exc:  # reported to the producer on its next call
                self._error = exc
            finally:
                chunk = None
                self._queue.task_done()

    def _after_write(self) -> None:
        release_memory()
        self._written += 1
        log.debug("%d chunks written", self._written)
        if self._kill_after and self._written >= self._kill_after:
            log.warning(
                "%s=%d: killing this process (test hook)", KILL_AFTER_CHUNKS_ENV, self._kill_after
            )
            os.kill(os.getpid(), signal.SIGKILL)

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, chunk: Chunk) -> None:
        """Hand ``chunk`` over once the previous one is written (the caller drops its reference)."""
        self._queue.join()
        self._check()
        self._queue.put(chunk)

    def close(self) -> None:
        """Wait for every queued chunk to be written; re-raise a writer error."""
        self._queue.put(None)
        self._thread.join()
        self._check()


def release_memory() -> None:
    """Hand freed buffers back to the OS (arrow pool, glibc arenas) so RSS stays flat."""
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def existing_chunks(layouts: list[CacheLayout], index: int) -> bool:
    """Whether every hookpoint already holds the complete files of chunk ``index``."""
    return all(lay.chunk(index).exists() and lay.token_chunk(index).exists() for lay in layouts)


def chunk_files(layout: CacheLayout) -> list[Path]:
    folder = layout.work / "chunks"
    return sorted(folder.glob("chunk-*.parquet")) if folder.is_dir() else []
