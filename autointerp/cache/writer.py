"""Resumable spill files: one file per chunk of windows, written by a background thread.

A chunk file holds the chunk's nonzeros merged by latent, one aligned segment per latent
shard (cache/spill.py), so the merge reads only its own segment of every chunk. The file is
written once, with direct I/O from a reused buffer, to a temp name and renamed: a file that
exists is complete.
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
from autointerp.cache.layout import SPILL_SUFFIX, CacheLayout, arrow_array, write_parquet_atomic
from autointerp.cache.spill import SpillFile, SpillWriter

log = logging.getLogger(__name__)

KILL_AFTER_CHUNKS_ENV = "AUTOINTERP_KILL_AFTER_CHUNKS"
_TOKEN_COMPRESSION = "lz4"
_local = threading.local()  # the writing thread's SpillWriter: its buffers go when it ends


@dataclass
class Chunk:
    """The windows of one chunk and, per hookpoint, its batches' nonzeros (each sorted by
    latent, ``seq`` counted from the chunk's first window: runs merged into the spill file)."""

    index: int
    seq_offset: int
    n_windows: int = 0
    tokens: list[np.ndarray] = field(default_factory=list)
    runs: dict[str, list[Nonzeros]] = field(default_factory=dict)

    def add(self, windows: np.ndarray, nz: dict[str, Nonzeros]) -> None:
        """Append a batch of latent-sorted nonzeros (``seq`` counting from its first window)."""
        self.tokens.append(windows)
        for spec, n in nz.items():
            n.seq += np.int32(self.seq_offset + self.n_windows)
            self.runs.setdefault(spec, []).append(n)
        self.n_windows += len(windows)


@dataclass
class HookpointTarget:
    layout: CacheLayout
    shards: list[tuple[int, int]]
    n_latents: int


def tokens_table(windows: list[np.ndarray], seq_offset: int) -> pa.Table:
    arr = np.concatenate(windows).astype(np.int32, copy=False)
    n, ctx = arr.shape
    values = arrow_array(arr.reshape(-1))
    tokens = pa.FixedSizeListArray.from_arrays(values, ctx).cast(pa.list_(pa.int32()))
    seq = arrow_array(np.arange(seq_offset, seq_offset + n, dtype=np.int32))
    return pa.table({"seq_id": seq, "tokens": tokens})


def write_chunk(chunk: Chunk, targets: dict[str, HookpointTarget]) -> None:
    """Write the chunk's spill file and token file of every hookpoint (skipping existing ones)."""
    tokens = None
    for spec, target in targets.items():
        path = target.layout.chunk(chunk.index)
        runs = chunk.runs.pop(spec, [])
        if not path.exists():
            n = target.n_latents
            cols = [(_counts(r, n), r.seq, r.value, r.pos) for r in runs]
            _spill_writer().write(path, cols, target.shards, n)
            del runs, cols
        tok_path = target.layout.token_chunk(chunk.index)
        if not tok_path.exists():
            tokens = tokens if tokens is not None else tokens_table(chunk.tokens, chunk.seq_offset)
            write_parquet_atomic(tokens, tok_path, compression=_TOKEN_COMPRESSION)


def _counts(nz: Nonzeros, n_latents: int) -> np.ndarray:
    if nz.counts is not None:
        return nz.counts
    return np.bincount(nz.latent, minlength=n_latents)


def _spill_writer() -> SpillWriter:
    writer = getattr(_local, "spill", None)
    if writer is None:
        writer = _local.spill = SpillWriter()
    return writer


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
        release_memory(trim=True)
        self._check()


def release_memory(trim: bool = False) -> None:
    """Hand the arrow pool's freed buffers back to the OS; with ``trim``, glibc's arenas too.

    Trimming after every chunk or shard made the next one fault the same pages in again:
    on the 2-core machine that cost ~0.8 µs of CPU a token (the kernel zeroes every page),
    for the same peak RSS. The arenas are trimmed once at the end of each phase instead.
    """
    pa.default_memory_pool().release_unused()
    if not trim:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def existing_chunks(layouts: list[CacheLayout], index: int) -> bool:
    """Whether every hookpoint already holds the complete files of chunk ``index``."""
    return all(lay.chunk(index).exists() and lay.token_chunk(index).exists() for lay in layouts)


def chunk_files(layout: CacheLayout) -> list[Path]:
    folder = layout.work / "chunks"
    return sorted(folder.glob(f"chunk-*{SPILL_SUFFIX}")) if folder.is_dir() else []


__all__ = ["Chunk", "ChunkWriter", "HookpointTarget", "SpillFile", "existing_chunks"]
