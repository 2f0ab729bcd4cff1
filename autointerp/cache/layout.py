"""Paths, shard ranges and safe Parquet I/O for one hookpoint's cache directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from autointerp.cache.errors import CorruptCacheError

FORMAT_VERSION = 1

NONZERO_SCHEMA = pa.schema(
    [
        ("latent", pa.int32()),
        ("seq_id", pa.int32()),
        ("pos", pa.int16()),
        ("value", pa.float32()),
    ]
)
# Part files: the same columns, never null. Written with lz4 and delta-encoded latent and seq_id
# columns (chosen by measurement on the 2-core machine, a 2M-row part: zstd with plain columns,
# as before, cost 53 ns of CPU a row to write and 23 to read for 6.5 B a row; this costs 28 to
# write and 8 to read for 6.3 B a row; nullable columns cost ~9 ns a row more to write).
PART_SCHEMA = pa.schema([pa.field(f.name, f.type, nullable=False) for f in NONZERO_SCHEMA])
PART_OPTIONS: dict = {
    "compression": "lz4",
    "use_dictionary": False,
    "column_encoding": {"latent": "DELTA_BINARY_PACKED", "seq_id": "DELTA_BINARY_PACKED"},
}
TOKENS_SCHEMA_FIELDS = ("seq_id", "tokens")
SPILL_SUFFIX = ".spill"  # chunk spill files (cache/spill.py); ".arrow" and ".parquet" ones: before


def arrow_array(values: np.ndarray, valid: np.ndarray | None = None) -> pa.Array:
    """A zero-copy Arrow array of a numeric numpy array (``valid``: False where null).

    ``pa.array`` does the same but imports pandas on its first call (~0.3 s, in every process).
    """
    values = np.ascontiguousarray(values)
    bitmap, nulls = None, 0
    if valid is not None:
        bitmap = pa.py_buffer(np.packbits(valid, bitorder="little"))
        nulls = len(valid) - int(np.count_nonzero(valid))
    buffers = [bitmap, pa.py_buffer(values)]
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), buffers, nulls)


def hookpoint_dirname(spec: str) -> str:
    """Folder name of a hookpoint: ``model.layers.1.mlp:input`` -> ``model.layers.1.mlp@input``."""
    return spec.replace(":", "@")


def part_name(start: int, end: int) -> str:
    return f"part-{start:07d}-{end:07d}.parquet"


def shard_ranges(n_latents: int, shard_latents: int) -> list[tuple[int, int]]:
    """Contiguous, disjoint ranges of ``shard_latents`` latents that cover ``n_latents``."""
    return [(s, min(s + shard_latents, n_latents)) for s in range(0, n_latents, shard_latents)]


def plan_shard_latents(
    n_latents: int, expected_nonzeros: float, target_rows: int, multiple: int = 8
) -> int:
    """Latents per shard so that one shard holds about ``target_rows`` nonzeros at most."""
    per_latent = max(expected_nonzeros / max(n_latents, 1), 1e-9)
    size = int(target_rows / per_latent)
    if size >= multiple:
        size -= size % multiple
    return max(1, min(n_latents, size))


@dataclass(frozen=True)
class CacheLayout:
    """Every path inside ``<run_dir>/cache/<hookpoint>/``."""

    root: Path

    @classmethod
    def of(cls, run_dir: Path | str, hookpoint: str) -> CacheLayout:
        return cls(Path(run_dir) / "cache" / hookpoint_dirname(hookpoint))

    @property
    def meta(self) -> Path:
        return self.root / "meta.json"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens.parquet"

    @property
    def stats(self) -> Path:
        return self.root / "latent_stats.parquet"

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    def part(self, start: int, end: int) -> Path:
        return self.activations / part_name(start, end)

    @property
    def work(self) -> Path:
        return self.root / "_work"

    @property
    def plan(self) -> Path:
        return self.work / "plan.json"

    @property
    def done(self) -> Path:
        return self.work / "chunks_done.json"

    def chunk(self, index: int) -> Path:
        return self.work / "chunks" / f"chunk-{index:06d}{SPILL_SUFFIX}"

    def token_chunk(self, index: int) -> Path:
        return self.work / "tokens" / f"chunk-{index:06d}.parquet"

    def shard_stats(self, start: int, end: int) -> Path:
        return self.work / "stats" / f"stats-{start:07d}-{end:07d}.parquet"


def tmp_path(path: Path) -> Path:
    return path.with_name(path.name + f".tmp{os.getpid()}")


def write_parquet_atomic(
    table: pa.Table,
    path: Path,
    row_group_sizes: list[int] | None = None,
    compression: str = "zstd",
    use_dictionary: bool = True,
    column_encoding: dict[str, str] | None = None,
) -> None:
    """Write ``table`` to ``path`` through a temp file and ``os.replace``: all or nothing.

    ``row_group_sizes`` splits the table into exactly those row groups (empty ones included).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    with pq.ParquetWriter(
        tmp,
        table.schema,
        compression=compression,
        write_page_checksum=True,
        use_dictionary=use_dictionary,
        column_encoding=column_encoding,
    ) as writer:
        if row_group_sizes is None:
            writer.write_table(table, row_group_size=max(1, table.num_rows))
        else:
            offset = 0
            for n in row_group_sizes:
                writer.write_table(table.slice(offset, n), row_group_size=max(1, n))
                offset += n
    os.replace(tmp, path)


def open_parquet(path: Path, n_row_groups: int | None = None) -> pq.ParquetFile:
    """Open a Parquet file, checking its footer; a broken file raises CorruptCacheError."""
    try:
        pf = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptCacheError(path, _reason(exc)) from None
    if n_row_groups is not None and pf.num_row_groups != n_row_groups:
        raise CorruptCacheError(
            path, f"{pf.num_row_groups} row groups where {n_row_groups} were expected"
        )
    return pf


def read_parquet(path: Path, **kwargs: object) -> pa.Table:
    """Read a whole Parquet file, verifying page checksums; errors name the file.

    (``pq.read_table`` would go through pyarrow.dataset and import pandas: ~0.3 s a process.)
    """
    try:
        with pq.ParquetFile(path, page_checksum_verification=True) as pf:
            return pf.read(**kwargs)  # type: ignore[arg-type]
    except (OSError, pa.ArrowException) as exc:
        raise CorruptCacheError(path, _reason(exc)) from None


def _reason(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def remove_temp_files(root: Path) -> None:
    """Delete temp files left by a killed process (never a complete file)."""
    if root.is_dir():
        for p in root.rglob("*.tmp*"):
            if p.is_file():
                p.unlink()
