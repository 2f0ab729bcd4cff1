"""Read a completed cache (docs/formats.md); every broken file raises CorruptCacheError."""

from __future__ import annotations

import bisect
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from autointerp.cache.errors import CacheMissingError, CorruptCacheError
from autointerp.cache.layout import CacheLayout, open_parquet, read_parquet
from autointerp.cache.state import read_meta


class ActivationCache:
    """One hookpoint's cache: ``ActivationCache("results/demo", "model.layers.1")``."""

    def __init__(self, run_dir: Path | str, hookpoint: str) -> None:
        self.layout = CacheLayout.of(run_dir, hookpoint)
        if not self.layout.meta.exists():
            state = "incomplete" if self.layout.root.exists() else "missing"
            raise CacheMissingError(
                f"the cache of {hookpoint} in {self.layout.root} is {state}: run "
                f"`autointerp cache --run-dir {run_dir} --hookpoint {hookpoint}` first"
            )
        self.meta: dict[str, Any] = read_meta(self.layout)
        self.shards: list[tuple[int, int]] = [(int(a), int(b)) for a, b in self.meta["shards"]]
        self._starts = [s for s, _ in self.shards]
        for start, end in self.shards:
            if not self.layout.part(start, end).exists():
                raise CorruptCacheError(self.layout.part(start, end), "file missing")

    @property
    def n_latents(self) -> int:
        return int(self.meta["n_latents"])

    @property
    def root(self) -> Path:
        return self.layout.root

    def part_files(self) -> list[Path]:
        return [self.layout.part(s, e) for s, e in self.shards]

    def tokens(self) -> np.ndarray:
        """Token windows as an int32 array ``[n_seqs, ctx_len]`` (row = seq_id)."""
        table = read_parquet(self.layout.tokens)
        flat = pc.list_flatten(table.column("tokens")).to_numpy()
        ctx = int(self.meta["ctx_len"])
        if len(flat) != table.num_rows * ctx:
            raise CorruptCacheError(self.layout.tokens, "windows of the wrong length")
        return flat.astype(np.int32, copy=False).reshape(table.num_rows, ctx)

    def stats(self) -> pl.DataFrame:
        """``latent_stats.parquet``: one row per latent."""
        return _frame(read_parquet(self.layout.stats))

    def read_latents(self, start: int = 0, end: int | None = None) -> pl.DataFrame:
        """Nonzeros of latents ``[start, end)`` sorted by (latent, seq_id, pos); reads only the
        part files that overlap the range."""
        end = self.n_latents if end is None else end
        if not 0 <= start <= end <= self.n_latents:
            raise ValueError(f"latent range [{start}, {end}) outside [0, {self.n_latents})")
        tables = []
        first = max(0, bisect.bisect_right(self._starts, start) - 1)
        for s, e in self.shards[first:]:
            if s >= end:
                break
            path = self.layout.part(s, e)
            table = read_parquet(path)
            if s < start or e > end:
                lat = table.column("latent")
                table = table.filter(pc.and_(pc.greater_equal(lat, start), pc.less(lat, end)))
            tables.append(table)
        if not tables:
            return _frame(read_parquet(self.layout.part(*self.shards[0])).slice(0, 0))
        return _frame(pa.concat_tables(tables, promote_options="permissive"))  # any version

    def read_latent(self, latent: int) -> pl.DataFrame:
        return self.read_latents(latent, latent + 1)

    def validate(self) -> None:
        """Open every file's footer (cheap); raise CorruptCacheError naming a broken one."""
        for path in [self.layout.tokens, self.layout.stats, *self.part_files()]:
            open_parquet(path)


def _frame(table: pa.Table) -> pl.DataFrame:
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    return df
