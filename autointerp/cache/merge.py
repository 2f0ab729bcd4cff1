"""Turn a hookpoint's chunk spill files into the final cache: latent-range part files, latent
statistics, the token table and meta.json (written last; its presence means complete).

Each merge worker keeps its buffers from shard to shard (cache/directio.py): the segments it
reads, the merged columns, the Parquet bytes of the part, which goes to disk by direct I/O.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import signal
import threading
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.cache.budget import merge_workers
from autointerp.cache.directio import AlignedBuffer, round_up, write_file
from autointerp.cache.encode import Nonzeros
from autointerp.cache.errors import CorruptCacheError
from autointerp.cache.layout import (
    PART_OPTIONS,
    PART_SCHEMA,
    CacheLayout,
    arrow_array,
    read_parquet,
    tmp_path,
    write_parquet_atomic,
)
from autointerp.cache.spill import SpillFile, gather_index, run_sources
from autointerp.cache.stats import shard_stats
from autointerp.cache.writer import release_memory

log = logging.getLogger(__name__)
_DTYPES = (np.int32, np.float32, np.int16)  # seq_id, value, pos

KILL_AFTER_SHARDS_ENV = "AUTOINTERP_KILL_AFTER_SHARDS"
TOKEN_ROW_GROUP_TOKENS = 1 << 20  # tokens per row group of tokens.parquet


def merge_shards(
    layout: CacheLayout,
    shards: list[tuple[int, int]],
    n_chunks: int,
    n_tokens_counted: int,
    budget_bytes: int | None = None,
    only: Collection[int] | None = None,
) -> None:
    """Write every missing ``activations/part-*.parquet`` (and its stats) from the chunks;
    with ``only``, just those of the shards at these indices (a Ray task's share).

    Memory holds one shard per worker: its segment of every chunk, merged (shards are sized
    for that in cache/budget.py), plus the headers of the chunk files. Workers are threads
    (the copies, sorts, compression and I/O release the GIL), one more than the cores where
    ``budget_bytes`` holds that many of the largest shard beside what the process holds.
    """
    kill_after = int(os.environ.get(KILL_AFTER_SHARDS_ENV, "0") or 0)
    todo = [
        (i, s, e)
        for i, (s, e) in enumerate(shards)
        if not (layout.part(s, e).exists() and layout.shard_stats(s, e).exists())
        and (only is None or i in only)
    ]
    if not todo:
        return
    need_chunks = any(not layout.part(s, e).exists() for _, s, e in todo)
    files = (
        [SpillFile(layout.chunk(c), len(shards)) for c in range(n_chunks)] if need_chunks else []
    )
    for f in files:
        for i, start, end in todo:
            if f.bounds[i : i + 2] != [start, end]:
                raise CorruptCacheError(f.path, f"shard {i} is not latents {start}-{end}")
    largest = max((sum(f.rows[i] for f in files) for i, _, _ in todo), default=0)
    workers = merge_workers(budget_bytes, largest)
    lock = threading.Lock()
    written = 0
    free: queue.SimpleQueue[ShardBuffers] = queue.SimpleQueue()
    for _ in range(workers):
        free.put(ShardBuffers())

    def one(i: int, start: int, end: int) -> None:
        nonlocal written
        bufs = free.get()
        part = layout.part(start, end)
        if part.exists():  # complete; only its statistics are missing
            nz = _read_part(part)
        else:
            nz = bufs.merge(files, i, start, end)
            bufs.write_part(nz, part)
        stats = shard_stats(nz, start, end, n_tokens_counted)
        write_parquet_atomic(stats, layout.shard_stats(start, end))
        del nz, stats
        free.put(bufs)
        log.debug("shard %d-%d written", start, end)
        with lock:
            written += 1
            if kill_after and written >= kill_after:
                log.warning(
                    "%s=%d: killing this process (test hook)", KILL_AFTER_SHARDS_ENV, kill_after
                )
                os.kill(os.getpid(), signal.SIGKILL)

    try:
        if workers <= 1 or kill_after or len(todo) == 1:
            for job in todo:
                one(*job)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="merge") as pool:
                for future in [pool.submit(one, *job) for job in todo]:
                    future.result()
    finally:
        for f in files:
            f.close()
        while not free.empty():
            free.get().release()
        release_memory(trim=True)


class ShardBuffers:
    """One merge worker's buffers, kept from shard to shard."""

    def __init__(self) -> None:
        self.segment = AlignedBuffer()
        self.staged = [AlignedBuffer() for _ in range(3)]  # seq, value, pos of every chunk
        self.merged = [AlignedBuffer() for _ in range(3)]  # seq, value, pos
        self.index = AlignedBuffer()
        self.parquet = AlignedBuffer()

    def merge(self, files: list[SpillFile], i: int, start: int, end: int) -> Nonzeros:
        """Shard ``i``'s segment of every chunk, merged: sorted by (latent, seq, pos).

        Chunks hold consecutive windows and a chunk's runs consecutive batches, so within a
        latent the rows of one run come before those of the next: one gather puts every row
        in place, no sort.
        """
        n = sum(f.rows[i] for f in files)
        staged = [buf.typed(n, dt) for buf, dt in zip(self.staged, _DTYPES, strict=True)]
        counts = []
        offset = 0
        for f in files:
            cnt, *cols = f.read_segment(i, self.segment)
            counts.append(cnt.astype(np.int64))
            if len(files) == 1:  # gather from the segment itself
                staged = cols
                break
            for out, col in zip(staged, cols, strict=True):
                out[offset : offset + len(col)] = col
            offset += len(cols[0])
        runs = np.concatenate(counts) if counts else np.zeros((1, end - start), np.int64)
        per_latent = runs.sum(axis=0)
        latent = np.repeat(np.arange(start, end, dtype=np.int32), per_latent)
        if len(runs) > 1:
            src = run_sources(runs)
            index = gather_index(src.T.ravel(), runs.T.ravel(), self.index.typed(n, np.int64))
            merged = [buf.typed(n, dt) for buf, dt in zip(self.merged, _DTYPES, strict=True)]
            for out, col in zip(merged, staged, strict=True):
                np.take(col, index, out=out, mode="clip")
            staged = merged
        seq, value, pos = staged
        return Nonzeros(latent, seq, pos, value)

    def write_part(self, nz: Nonzeros, path: Path) -> None:
        """The part file's Parquet bytes built in memory, then written by direct I/O."""
        table = _table(nz)
        out = self.parquet.get(round_up(16 * len(nz) + (1 << 20)))
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(out))
        try:
            opts = {"write_page_checksum": True, **PART_OPTIONS}
            with pq.ParquetWriter(sink, table.schema, **opts) as w:
                w.write_table(table, row_group_size=max(1, table.num_rows))
        except OSError:  # larger than the buffer (never seen): write it the ordinary way
            write_parquet_atomic(table, path, **PART_OPTIONS)
            return
        write_file(path, out, sink.tell())

    def release(self) -> None:
        for buf in [self.segment, *self.staged, *self.merged, self.index, self.parquet]:
            buf.release()


def _table(nz: Nonzeros) -> pa.Table:
    columns = [arrow_array(c) for c in (nz.latent, nz.seq, nz.pos, nz.value)]
    return pa.Table.from_arrays(columns, schema=PART_SCHEMA)


def _read_part(path: Path) -> Nonzeros:
    table = read_parquet(path)
    return Nonzeros(*[table.column(i).to_numpy() for i in range(4)])


def write_tokens(layout: CacheLayout, n_chunks: int, ctx_len: int) -> None:
    """Stream the token chunks, in order, into ``tokens.parquet``.

    Row groups hold ``TOKEN_ROW_GROUP_TOKENS`` tokens whatever the chunk size, so the file's
    bytes do not depend on the memory budget.
    """
    if layout.tokens.exists():
        return
    rows = max(1, TOKEN_ROW_GROUP_TOKENS // ctx_len)
    tmp = tmp_path(layout.tokens)
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    n_pending = 0

    def flush(table: pa.Table) -> None:
        assert writer is not None
        writer.write_table(table.combine_chunks(), row_group_size=max(1, table.num_rows))

    try:
        for c in range(n_chunks):
            table = read_parquet(layout.token_chunk(c))
            if writer is None:
                writer = pq.ParquetWriter(
                    tmp, table.schema, compression="zstd", write_page_checksum=True
                )
            pending.append(table)
            n_pending += table.num_rows
            while n_pending >= rows:
                whole = pa.concat_tables(pending)
                flush(whole.slice(0, rows))
                pending, n_pending = [whole.slice(rows)], n_pending - rows
        if n_pending:
            flush(pa.concat_tables(pending))
    finally:
        if writer is not None:
            writer.close()
    os.replace(tmp, layout.tokens)


def write_stats(layout: CacheLayout, shards: list[tuple[int, int]]) -> None:
    frames = [pl.from_arrow(read_parquet(layout.shard_stats(s, e))) for s, e in shards]
    table = pl.concat(frames).to_arrow()  # type: ignore[arg-type]
    write_parquet_atomic(table, layout.stats)


def write_meta(layout: CacheLayout, meta: dict[str, Any]) -> None:
    tmp = tmp_path(layout.meta)
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, layout.meta)


def finalize(
    layout: CacheLayout, shards: list[tuple[int, int]], n_chunks: int, meta: dict[str, Any]
) -> None:
    """Token table, statistics, then meta.json; then drop the work folder."""
    write_tokens(layout, n_chunks, int(meta["ctx_len"]))
    write_stats(layout, shards)
    write_meta(layout, meta)
    shutil.rmtree(layout.work, ignore_errors=True)
