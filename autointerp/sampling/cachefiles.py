"""The activation cache as numpy arrays, for the sampling hot path.

Files, meta and completeness checks come from the cache stage's own ``ActivationCache``; this
module adds a column-wise numpy read of one shard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from autointerp.cache.layout import hookpoint_dirname
from autointerp.cache.reader import ActivationCache

__all__ = ["CacheFiles", "Nonzeros", "find_hookpoints", "hookpoint_dirname"]


@dataclass(frozen=True)
class Nonzeros:
    """Sparse activations of a latent range, sorted by (latent, seq_id, pos)."""

    latent: np.ndarray  # int32
    seq_id: np.ndarray  # int32
    pos: np.ndarray  # int32
    value: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.value)

    def keys(self, n_seqs: int, ctx_len: int) -> np.ndarray:
        """Sorted int64 key ``(latent * n_seqs + seq_id) * ctx_len + pos``."""
        return (self.latent.astype(np.int64) * n_seqs + self.seq_id) * ctx_len + self.pos

    def subset(self, mask: np.ndarray) -> Nonzeros:
        return Nonzeros(self.latent[mask], self.seq_id[mask], self.pos[mask], self.value[mask])


class CacheFiles:
    """One hookpoint's completed cache folder (``meta.json`` present)."""

    def __init__(self, cache_dir: Path) -> None:
        self.dir = Path(cache_dir)
        if not (self.dir / "meta.json").is_file():
            raise FileNotFoundError(
                f"{self.dir / 'meta.json'} is missing: the cache at {self.dir} is not complete; "
                "run `autointerp cache` first"
            )
        hookpoint = json.loads((self.dir / "meta.json").read_text())["hookpoint"]
        self.reader = ActivationCache(self.dir.parent.parent, hookpoint)
        self.meta: dict = self.reader.meta
        self.hookpoint: str = hookpoint
        self.n_latents: int = self.reader.n_latents
        self.ctx_len: int = int(self.meta["ctx_len"])
        self.n_seqs: int = int(self.meta["n_seqs"])
        self.shards: list[tuple[int, int]] = self.reader.shards
        self._tokens: np.ndarray | None = None
        self._stats: pl.DataFrame | None = None

    def shard_path(self, start: int, end: int) -> Path:
        return self.reader.layout.part(start, end)

    @property
    def tokens(self) -> np.ndarray:
        """Token ids, ``[n_seqs, ctx_len]`` int32 (row = seq_id)."""
        if self._tokens is None:
            self._tokens = self.reader.tokens()
            if len(self._tokens) != self.n_seqs:
                raise ValueError(f"{self.dir}/tokens.parquet: expected {self.n_seqs} windows")
        return self._tokens

    @property
    def stats(self) -> pl.DataFrame:
        """latent_stats.parquet, sorted by latent."""
        if self._stats is None:
            self._stats = self.reader.stats().sort("latent")
        return self._stats

    def read_shard(self, start: int, end: int, latents: np.ndarray | None = None) -> Nonzeros:
        """Nonzeros of the shard ``[start, end)``, optionally only of ``latents`` (sorted)."""
        cols = ["latent", "seq_id", "pos", "value"]
        table = pq.read_table(self.shard_path(start, end), columns=cols)

        def col(name: str, dtype: type) -> np.ndarray:
            arr = table.column(name).to_numpy()
            return arr.astype(dtype, copy=False)

        nz = Nonzeros(
            latent=col("latent", np.int32),
            seq_id=col("seq_id", np.int32),
            pos=col("pos", np.int32),
            value=col("value", np.float32),
        )
        if latents is not None and len(latents) < end - start:
            want = np.zeros(end - start, dtype=bool)
            lat = np.asarray(latents, dtype=np.int64)
            want[lat[(lat >= start) & (lat < end)] - start] = True
            keep = want[nz.latent - start]
            if not keep.all():
                nz = nz.subset(keep)
        return nz


def find_hookpoints(run_dir: Path) -> list[str]:
    """Hookpoints with a completed cache under ``run_dir/cache``."""
    found = []
    for meta in sorted((Path(run_dir) / "cache").glob("*/meta.json")):
        found.append(json.loads(meta.read_text())["hookpoint"])
    return found
