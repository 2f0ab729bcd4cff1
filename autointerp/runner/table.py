"""Resumable Parquet output of an LLM stage.

Rows go to part files under ``<final dir>/_parts/<final name>/`` as they complete (a killed
run loses at most the rows not yet flushed; their LLM answers are in the response cache). At
the end the parts are appended to the final file, streamed, so memory does not grow with the
run. The keys of rows already written (final file and parts) say what a rerun skips.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

log = logging.getLogger(__name__)


class PartTable:
    """One output table (e.g. ``scores/detection.parquet``) written through part files."""

    def __init__(
        self,
        final: Path,
        key: Sequence[str],
        schema: dict[str, pl.DataType] | None = None,
        sort: bool = True,
        flush_rows: int = 512,
        flush_s: float = 30.0,
    ) -> None:
        self.final = Path(final)
        self.key = list(key)
        self.schema = schema
        self.sort = sort
        self.parts = self.final.parent / "_parts" / self.final.name.removesuffix(".parquet")
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self._buffer: list[pl.DataFrame] = []
        # blocks of dict rows, each with the values its rows share (e.g. a latent's key)
        self._dicts: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        self._buffered = 0
        self._last_flush = time.monotonic()
        self._dropped: pl.DataFrame | None = None
        self._old: set[Path] = set()

    # -- what exists ------------------------------------------------------------------------
    def _sources(self) -> list[Path]:
        found = [self.final] if self.final.is_file() else []
        if self.parts.is_dir():
            found += sorted(self.parts.glob("part-*.parquet"))
        return found

    def done_keys(self, redo_status: str | None = None) -> set[tuple[Any, ...]]:
        """Keys of every row already written (final file and parts), except rows whose
        ``status`` is ``redo_status`` (failed rows are worth another try: the response cache
        makes what did succeed free)."""
        keys: set[tuple[Any, ...]] = set()
        for src in self._sources():
            cols = self.key + (["status"] if redo_status else [])
            df = self._with_key(pl.scan_parquet(src)).select(cols).collect()
            if redo_status:
                df = df.filter(pl.col("status") != redo_status).select(self.key)
            keys.update(df.iter_rows())
        return keys

    def _with_key(self, scan: pl.LazyFrame) -> pl.LazyFrame:
        """``scan`` with every key column (null where a file written before a key column
        existed lacks it: such rows match no new key)."""
        have = scan.collect_schema().names()
        missing = [c for c in self.key if c not in have]
        if not missing:
            return scan
        types = self.schema or {}
        return scan.with_columns(
            [pl.lit(None, types.get(c, pl.String())).alias(c) for c in missing]
        )

    def drop(self, keys: pl.DataFrame) -> None:
        """Rows already written whose values in ``keys``' columns (a subset of the key) match
        a row of ``keys`` are removed at :meth:`close` (``--force``); new rows are kept."""
        self._dropped = keys.unique()
        self._old = set(self._sources())

    # -- writing ----------------------------------------------------------------------------
    def add(
        self,
        rows: pl.DataFrame | Iterable[dict[str, Any]],
        common: dict[str, Any] | None = None,
    ) -> None:
        """Buffer rows (a frame, or dicts: those become one frame per flush, which is much
        cheaper than a frame per latent). ``common``: values every one of the dict rows has
        (e.g. the key of the latent they belong to), given once instead of copied into each."""
        if isinstance(rows, pl.DataFrame):
            if rows.is_empty():
                return
            self._buffer.append(rows)
            self._buffered += len(rows)
        else:
            rows = list(rows)
            if rows:
                self._dicts.append((common or {}, rows))
            self._buffered += len(rows)
        if self._buffered >= self.flush_rows or time.monotonic() - self._last_flush > self.flush_s:
            self.flush()

    def _frame(self, blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> pl.DataFrame:
        if not blocks:
            return pl.DataFrame()
        if self.schema is None:
            rows = [{**common, **r} for common, block in blocks for r in block]
            return pl.DataFrame(rows, infer_schema_length=None)
        extra = list(
            dict.fromkeys(
                c
                for common, block in blocks
                for r in (common, *block)
                for c in r
                if c not in self.schema
            )
        )
        schema = {**self.schema, **{c: pl.Float64() for c in extra}}
        # column lists, not row dicts: polars builds a frame from rows several times slower
        columns = {}
        for c in schema:
            values: list[Any] = []
            for common, block in blocks:
                if c in common:
                    values.extend([common[c]] * len(block))
                else:
                    values.extend([r.get(c) for r in block])
            columns[c] = values
        fast = {c: _numeric_lists(c, v, schema[c]) for c, v in columns.items()}
        fast = {c: s for c, s in fast.items() if s is not None}
        rest = {c: v for c, v in columns.items() if c not in fast}
        if not rest:
            return pl.DataFrame(list(fast.values())).select(list(schema))
        frame = pl.DataFrame(rest, schema={c: schema[c] for c in rest}, strict=False)
        return frame.with_columns(list(fast.values())).select(list(schema))

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if self._dicts:
            self._buffer.append(self._frame(self._dicts))
            self._dicts = []
        if not self._buffer:
            return
        df = pl.concat(self._buffer, how="diagonal_relaxed")
        self._buffer, self._buffered = [], 0
        self.parts.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = self.parts / f".{name}.tmp"
        df.write_parquet(tmp, compression="zstd")
        os.replace(tmp, self.parts / name)

    def close(self) -> Path | None:
        """Flush, then merge the parts into the final file (atomically). Returns its path."""
        self.flush()
        sources = self._sources()
        if not sources:
            return None
        if sources == [self.final] and self._dropped is None:
            return self.final  # nothing new: the final file stays as it is
        scans = []
        for src in sources:
            scan = self._with_key(pl.scan_parquet(src))
            if self._dropped is not None and src in self._old:
                on = self._dropped.columns
                scan = scan.join(self._dropped.lazy(), on=on, how="anti", nulls_equal=True)
            scans.append(scan)
        scans = self._dedupe(scans)
        merged = self._ordered(pl.concat(scans, how="diagonal_relaxed"))
        tmp = self.final.with_name(f".{self.final.name}.tmp")
        self.final.parent.mkdir(parents=True, exist_ok=True)
        if self.sort:
            merged.collect().sort(self.key).write_parquet(tmp, compression="zstd")
        else:
            merged.sink_parquet(tmp, compression="zstd")
        os.replace(tmp, self.final)
        if self.parts.is_dir():
            shutil.rmtree(self.parts)
        with contextlib.suppress(OSError):
            self.parts.parent.rmdir()  # the _parts/ folder, once empty
        return self.final

    def _ordered(self, merged: pl.LazyFrame) -> pl.LazyFrame:
        """The schema's columns in its order, then the extra ones (e.g. ``recall_q<bin>``) in
        natural order: the same columns in the same order however the rows were split into
        parts (a part whose rows lack a bin would otherwise move that column last)."""
        if not self.schema:
            return merged
        names = merged.collect_schema().names()
        extra = sorted((c for c in names if c not in self.schema), key=_natural)
        return merged.select([c for c in self.schema if c in names] + extra)

    def _dedupe(self, scans: list[pl.LazyFrame]) -> list[pl.LazyFrame]:
        """A key's rows are taken from one source only, the newest that has it (sources are in
        write order): the safety net against a key written twice (by two processes, or by a
        rerun racing a dying one). Rows of one source are never touched."""
        per = pl.concat(
            [
                s.select(self.key).unique().with_columns(pl.lit(i, pl.Int32).alias("_src"))
                for i, s in enumerate(scans)
            ],
            how="diagonal_relaxed",
        ).collect()
        newest = per.group_by(self.key).agg(pl.col("_src").max().alias("_newest"), pl.len())
        dup = newest.filter(pl.col("len") > 1)
        if dup.is_empty():
            return scans
        losers = per.join(dup, on=self.key, nulls_equal=True).filter(
            pl.col("_src") != pl.col("_newest")
        )
        log.warning(
            "%s: %d key(s) were written more than once; keeping the newest rows of each",
            self.final.name,
            dup.height,
        )
        out = []
        for i, scan in enumerate(scans):
            stale = losers.filter(pl.col("_src") == i).select(self.key)
            if not stale.is_empty():
                schema = scan.collect_schema()
                stale = stale.cast({k: schema[k] for k in self.key})
                scan = scan.join(stale.lazy(), on=self.key, how="anti", nulls_equal=True)
            out.append(scan)
        return out

    def read(self) -> pl.DataFrame:
        """Everything written so far (final file and parts)."""
        srcs = self._sources()
        if not srcs:
            return pl.DataFrame()
        return pl.concat([pl.read_parquet(s) for s in srcs], how="diagonal_relaxed")


_NUMERIC = (pl.Float32, pl.Float64, pl.Int8, pl.Int16, pl.Int32, pl.Int64)


def _numeric_lists(name: str, values: list[Any], dtype: pl.DataType) -> pl.Series | None:
    """A list column of numbers (``List(Float32)``, ``List(Int16)``...) built from one flat
    array and offsets: polars converts nested Python sequences element by element, several
    times slower. Rows may be lists, numpy arrays or None. None (the general path) for other
    dtypes or a value that is not a flat sequence of numbers."""
    if not isinstance(dtype, pl.List) or not isinstance(dtype.inner, _NUMERIC):
        return None
    parts: list[np.ndarray] = []
    lengths = np.zeros(len(values), dtype=np.int64)
    null = np.zeros(len(values), dtype=bool)
    for i, v in enumerate(values):
        if v is None:
            null[i] = True
            continue
        a = np.asarray(v)
        if a.ndim != 1 or a.dtype.kind not in "iuf":
            return None  # bools, strings, None inside, nesting: the general path
        lengths[i] = len(a)
        parts.append(a)
    if not parts:
        return None
    # what the general path gives (strict=False: a value out of range is null)
    flat = pl.Series(np.concatenate(parts)).cast(dtype.inner, strict=False)
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    arr = pa.LargeListArray.from_arrays(
        pa.array(offsets), flat.to_arrow(), mask=pa.array(null) if null.any() else None
    )
    return pl.Series(name, arr).cast(dtype)


def _natural(name: str) -> list[Any]:
    """``recall_q10`` after ``recall_q9``."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
