"""Chunk spill files: a chunk's nonzeros, one aligned segment per latent shard.

Layout (little-endian; ``_work`` only, not a contract for other tools):

    header   b"AISPILL2", n_shards, n_latents, n_runs (int64), shard bounds (int64
             [n_shards + 1]), rows of each shard (int64 [n_shards]); zero-padded to 4,096 bytes
    segment  per shard, in order: rows of each (run, latent) (int32 [n_runs, width]), then the
             shard's rows, run after run, each run's sorted by (latent, seq, pos): seq_id
             (int32), value (float32), pos (int16) columns; zero-padded to 4,096 bytes

A run is a batch as the encoder sorted it: its rows of one shard are a slice, so a segment is
a few copies. When a chunk's (run, latent) counts would weigh too much beside its rows (many
latents, small batches), its batches are first merged into one run (one gather). The merge
puts the runs of every chunk in order with one gather per shard (``gather_index``), reading
one segment per chunk with one direct read (cache/directio.py). The latent column is not
stored (the counts rebuild it). A file that exists is complete (written to a temp name, then
renamed); its size and counts are checked when read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autointerp.cache.directio import ALIGN, AlignedBuffer, Reader, round_up, write_file
from autointerp.cache.errors import CorruptCacheError

MAGIC = b"AISPILL2"
ROW_BYTES = 10  # seq_id int32 + value float32 + pos int16


def segment_bytes(width: int, rows: int, runs: int = 1) -> int:
    return round_up(4 * width * runs + ROW_BYTES * rows)


def header_bytes(n_shards: int) -> int:
    return round_up(8 * (4 + 2 * n_shards + 1))


def segment_views(buf: np.ndarray, width: int, rows: int, runs: int = 1) -> tuple[np.ndarray, ...]:
    """(counts [runs, width], seq, value, pos) views of a segment's bytes."""
    a = 4 * width * runs
    b, c = a + 4 * rows, a + 8 * rows
    return (
        buf[:a].view(np.int32).reshape(runs, width),
        buf[a:b].view(np.int32),
        buf[b:c].view(np.float32),
        buf[c : c + 2 * rows].view(np.int16),
    )


def run_sources(counts: np.ndarray) -> np.ndarray:
    """Where the rows of (run, latent) start in runs laid end to end, each sorted by latent."""
    ends = np.cumsum(counts.ravel()).reshape(counts.shape)
    return ends - counts


def gather_index(starts: np.ndarray, lengths: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``concatenate([arange(s, s + n) for s, n in zip(starts, lengths)])`` into ``out``
    (int64, at least ``lengths.sum()`` long), with no temporary of that length."""
    keep = lengths > 0
    starts, lengths = starts[keep].astype(np.int64), lengths[keep].astype(np.int64)
    n = int(lengths.sum())
    index = out[:n]
    if n == 0:
        return index
    first = np.cumsum(lengths) - lengths  # where each segment lands in the output
    jump = starts - np.concatenate([[0], starts[:-1] + lengths[:-1]])
    index.fill(1)
    index[first] = jump + 1
    index[0] -= 1
    np.cumsum(index, out=index)
    return index


class SpillWriter:
    """Writes a chunk's latent-sorted runs into a spill file; its buffers are reused."""

    MAX_SLICES = 8192  # (run, shard) copies a chunk may take; beyond, runs are merged first

    def __init__(self) -> None:
        self.staged = [AlignedBuffer() for _ in range(3)]  # seq, value, pos of every run
        self.index = AlignedBuffer()
        self.file = AlignedBuffer()

    def write(
        self,
        path: Path,
        runs: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
        shards: list[tuple[int, int]],
        n_latents: int,
    ) -> None:
        """``runs``: (counts [n_latents], seq, value, pos) of each run, rows sorted by latent
        (rows of a latent in (seq, pos) order; the runs in (seq, pos) order too)."""
        runs = runs or [(np.zeros(n_latents, np.int64), *_empty_columns())]
        n = sum(len(r[1]) for r in runs)
        dtype = np.int32 if n < 1 << 31 else np.int64
        counts = np.stack([r[0] for r in runs]).astype(dtype)  # [run, latent]
        ends = np.cumsum(counts, axis=1, dtype=dtype)  # rows of each run up to each latent
        bounds = [s for s, _ in shards] + [shards[-1][1]]
        cut = np.zeros((len(runs), len(bounds)), np.int64)  # rows of each run before a shard
        cut[:, 1:] = ends[:, np.array(bounds[1:]) - 1]
        rows = (cut[:, 1:] - cut[:, :-1]).sum(axis=0).tolist()
        keep = len(runs) * len(shards) <= self.MAX_SLICES and counts.size * 4 <= n
        if not keep:  # merged into one run, shard by shard, from the runs laid end to end
            columns = self._stage(runs, n)
            run_start = np.cumsum([0] + [len(r[1]) for r in runs[:-1]])
        n_runs = len(runs) if keep else 1
        head = header_bytes(len(shards))
        sizes = [segment_bytes(b - a, r, n_runs) for (a, b), r in zip(shards, rows, strict=True)]
        size = head + sum(sizes)
        buf = self.file.get(size)
        buf[:head] = 0
        header = buf[:head].view(np.int64)
        header[0] = np.frombuffer(MAGIC, np.int64)[0]
        header[1:4] = len(shards), n_latents, n_runs
        header[4 : 5 + len(shards)] = bounds
        header[5 + len(shards) : 5 + 2 * len(shards)] = rows
        offset = head
        for s, ((a, b), r) in enumerate(zip(shards, rows, strict=True)):
            views = segment_views(buf[offset : offset + sizes[s]], b - a, r, n_runs)
            if keep:
                views[0][:] = counts[:, a:b]
                at = 0
                for k, run in enumerate(runs):
                    lo, hi = int(cut[k, s]), int(cut[k, s + 1])
                    for view, col in zip(views[1:], run[1:], strict=True):
                        view[at : at + hi - lo] = col[lo:hi]
                    at += hi - lo
            else:
                part = counts[:, a:b]
                views[0][0] = part.sum(axis=0)
                src = (ends[:, a:b] - part) + run_start[:, None]
                out = self.index.typed(r, np.int64)
                index = gather_index(src.T.ravel(), part.T.ravel(), out)
                for view, col in zip(views[1:], columns, strict=True):
                    np.take(col, index, out=view, mode="clip")
            used = 4 * (b - a) * n_runs + ROW_BYTES * r
            buf[offset + used : offset + sizes[s]] = 0
            offset += sizes[s]
        write_file(path, buf, size)

    def _stage(self, runs: list[tuple[np.ndarray, ...]], n: int) -> list[np.ndarray]:
        """The runs' columns laid end to end in the staging buffers."""
        columns = []
        for col, (buf, dtype) in enumerate(zip(self.staged, _DTYPES, strict=True)):
            out = buf.typed(n, dtype)
            np.concatenate([r[col + 1] for r in runs], out=out)
            columns.append(out)
        return columns


_DTYPES = (np.int32, np.float32, np.int16)


def _empty_columns() -> tuple[np.ndarray, ...]:
    return tuple(np.empty(0, dt) for dt in _DTYPES)


class SpillFile:
    """A chunk's spill file, open for reading one shard's segment at a time."""

    def __init__(self, path: Path, n_shards: int | None = None) -> None:
        self.path = path
        self._reader: Reader | None = None
        try:
            self._reader = Reader(path)
            head = AlignedBuffer()
            first = head.get(ALIGN)
            got = self._reader.read_into(0, first)
            header = first[: got - got % 8].view(np.int64)
            if got < 32:
                raise CorruptCacheError(path, "truncated header")
            if header[0] != np.frombuffer(MAGIC, np.int64)[0]:
                raise CorruptCacheError(path, "not a spill file of this version")
            shards, self.n_latents, self.n_runs = (int(v) for v in header[1:4])
            size = header_bytes(shards)
            if size > ALIGN:
                full = head.get(size)
                got = self._reader.read_into(0, full)
                header = full[: got - got % 8].view(np.int64)
            if len(header) < 5 + 2 * shards:
                raise CorruptCacheError(path, "truncated header")
            self.bounds = header[4 : 5 + shards].tolist()
            self.rows: list[int] = header[5 + shards : 5 + 2 * shards].tolist()
        except OSError as exc:
            self.close()
            raise CorruptCacheError(path, str(exc).splitlines()[0][:160]) from None
        except CorruptCacheError:
            self.close()
            raise
        self.offsets = [size]
        for i, r in enumerate(self.rows):
            self.offsets.append(self.offsets[-1] + segment_bytes(self.width(i), r, self.n_runs))
        if n_shards is not None and shards != n_shards:
            self.close()
            raise CorruptCacheError(path, f"{shards} shards where {n_shards} were expected")
        if self._reader.size != self.offsets[-1]:
            found = self._reader.size
            self.close()
            raise CorruptCacheError(path, f"{found} bytes where {self.offsets[-1]} were expected")

    def width(self, index: int) -> int:
        return self.bounds[index + 1] - self.bounds[index]

    def read_segment(self, index: int, out: AlignedBuffer) -> tuple[np.ndarray, ...]:
        """Shard ``index``'s (counts [n_runs, width], seq, value, pos), read into ``out``."""
        assert self._reader is not None
        start, end = self.offsets[index], self.offsets[index + 1]
        buf = out.get(end - start)
        if self._reader.read_into(start, buf) != end - start:
            raise CorruptCacheError(self.path, f"segment {index} is truncated")
        views = segment_views(buf, self.width(index), self.rows[index], self.n_runs)
        if int(views[0].sum(dtype=np.int64)) != self.rows[index] or (views[0] < 0).any():
            raise CorruptCacheError(self.path, f"segment {index} has wrong counts")
        return views

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
