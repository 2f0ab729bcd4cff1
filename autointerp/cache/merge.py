"""Turn a hookpoint's chunk spill files into the final cache: latent-range part files, latent
statistics, the token table and meta.json (written last; its presence means complete)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.cache.layout import (
    CacheLayout,
    open_parquet,
    read_parquet,
    read_row_group,
    tmp_path,
    write_parquet_atomic,
)
from autointerp.cache.stats import shard_stats
from autointerp.cache.writer import release_memory

log = logging.getLogger(__name__)

KILL_AFTER_SHARDS_ENV = "AUTOINTERP_KILL_AFTER_SHARDS"
TOKEN_ROW_GROUP_TOKENS = 1 << 20  # tokens per row group of tokens.parquet


def merge_shards(
    layout: CacheLayout, shards: list[tuple[int, int]], n_chunks: int, n_tokens_counted: int
) -> None:
    """Write every missing ``activations/part-*.parquet`` (and its stats) from the chunks.

    Memory holds one shard: its row group of every chunk, concatenated and sorted (shards are
    sized for that in cache/budget.py), plus the footers of the chunk files.
    """
    kill_after = int(os.environ.get(KILL_AFTER_SHARDS_ENV, "0") or 0)
    todo = [
        (i, s, e)
        for i, (s, e) in enumerate(shards)
        if not (layout.part(s, e).exists() and layout.shard_stats(s, e).exists())
    ]
    if not todo:
        return
    files: list[pq.ParquetFile] | None = None
    for written, (i, start, end) in enumerate(todo, 1):
        part = layout.part(start, end)
        if part.exists():  # complete; only its statistics are missing
            table = read_parquet(part)
        else:
            if files is None:
                files = [open_parquet(layout.chunk(c), len(shards)) for c in range(n_chunks)]
            table = _shard_table(files, layout, i, start, end)
            write_parquet_atomic(table, part)
        stats = shard_stats(table, start, end, n_tokens_counted)
        write_parquet_atomic(stats.to_arrow(), layout.shard_stats(start, end))
        del table, stats
        release_memory()  # hand the shard's buffers back before the next one
        log.debug("shard %d-%d written", start, end)
        if kill_after and written >= kill_after:
            log.warning(
                "%s=%d: killing this process (test hook)", KILL_AFTER_SHARDS_ENV, kill_after
            )
            os.kill(os.getpid(), signal.SIGKILL)


def _shard_table(
    files: list[pq.ParquetFile], layout: CacheLayout, index: int, start: int, end: int
) -> pa.Table:
    """Row group ``index`` of every chunk, in chunk order, stably sorted by latent."""
    pieces = [read_row_group(pf, index, layout.chunk(c)) for c, pf in enumerate(files)]
    table = pa.concat_tables(pieces)
    latent = table.column("latent").to_numpy()
    key = (latent - start).astype(np.uint16) if end - start <= 1 << 16 else latent
    return table.take(pa.array(np.argsort(key, kind="stable")))


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
