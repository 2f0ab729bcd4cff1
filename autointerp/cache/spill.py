"""Chunk spill files: a chunk's nonzeros, merged by latent, one aligned segment per latent shard.

Layout (little-endian; ``_work`` only, not a contract for other tools):

    header   b"AISPILL2", n_shards, n_latents (int64), shard bounds (int64 [n_shards + 1]),
             rows of each shard (int64 [n_shards]); zero-padded to 4,096 bytes
    segment  per shard, in order: rows of each of its latents (int32 [width]), then the
             shard's rows sorted by (latent, seq, pos): seq_id (int32), value (float32),
             pos (int16) columns; zero-padded to 4,096 bytes

The latent column is not stored (its counts rebuild it). The merge reads one segment per
chunk and shard, with one direct read (cache/directio.py). A file that exists is complete
(written to a temp name, then renamed); its size and counts are checked when read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autointerp.cache.directio import ALIGN, AlignedBuffer, Reader, round_up, write_file
from autointerp.cache.errors import CorruptCacheError

MAGIC = b"AISPILL2"
ROW_BYTES = 10  # seq_id int32 + value float32 + pos int16


def segment_bytes(width: int, rows: int) -> int:
    return round_up(4 * width + ROW_BYTES * rows)


def header_bytes(n_shards: int) -> int:
    return round_up(8 * (3 + 2 * n_shards + 1))


def segment_views(buf: np.ndarray, width: int, rows: int) -> tuple[np.ndarray, ...]:
    """(counts, seq, value, pos) views of a segment's bytes."""
    a, b, c = 4 * width, 4 * width + 4 * rows, 4 * width + 8 * rows
    return (
        buf[:a].view(np.int32),
        buf[a:b].view(np.int32),
        buf[b:c].view(np.float32),
        buf[c : c + 2 * rows].view(np.int16),
    )


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
    """Merges a chunk's latent-sorted runs into a spill file; its buffers are reused."""

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
        n = sum(len(r[1]) for r in runs)
        counts = (
            np.stack([r[0] for r in runs]).astype(np.int64)
            if runs
            else np.zeros((1, n_latents), np.int64)
        )
        staged = []
        for col, (buf, dtype) in enumerate(
            zip(self.staged, (np.int32, np.float32, np.int16), strict=False)
        ):
            out = buf.typed(n, dtype)
            if runs:
                np.concatenate([r[col + 1] for r in runs], out=out)
            staged.append(out)
        # the runs' segments of latent l, in run order, for every l in turn
        run_start = np.cumsum([0] + [len(r[1]) for r in runs[:-1]]) if runs else np.zeros(1)
        src = (np.cumsum(counts, axis=1) - counts) + np.asarray(run_start)[:, None]
        index = gather_index(src.T.ravel(), counts.T.ravel(), self.index.typed(n, np.int64))
        total = counts.sum(axis=0)
        bounds = [s for s, _ in shards] + [shards[-1][1]]
        rows = [int(total[a:b].sum()) for a, b in shards]
        head = header_bytes(len(shards))
        size = head + sum(segment_bytes(b - a, r) for (a, b), r in zip(shards, rows, strict=False))
        buf = self.file.get(size)
        buf[:head] = 0
        header = buf[:head].view(np.int64)
        header[0] = np.frombuffer(MAGIC, np.int64)[0]
        header[1:3] = len(shards), n_latents
        header[3 : 4 + len(shards)] = bounds
        header[4 + len(shards) : 4 + 2 * len(shards)] = rows
        offset, first = head, 0
        for (a, b), r in zip(shards, rows, strict=False):
            seg = segment_bytes(b - a, r)
            views = segment_views(buf[offset : offset + seg], b - a, r)
            views[0][:] = total[a:b]
            for view, col in zip(views[1:], staged, strict=False):
                np.take(col, index[first : first + r], out=view, mode="clip")
            used = 4 * (b - a) + ROW_BYTES * r
            buf[offset + used : offset + seg] = 0
            offset, first = offset + seg, first + r
        write_file(path, buf, size)


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
            if got < 24:
                raise CorruptCacheError(path, "truncated header")
            if header[0] != np.frombuffer(MAGIC, np.int64)[0]:
                raise CorruptCacheError(path, "not a spill file of this version")
            shards, self.n_latents = int(header[1]), int(header[2])
            size = header_bytes(shards)
            if size > ALIGN:
                full = head.get(size)
                got = self._reader.read_into(0, full)
                header = full[: got - got % 8].view(np.int64)
            if len(header) < 4 + 2 * shards:
                raise CorruptCacheError(path, "truncated header")
            self.bounds = header[3 : 4 + shards].tolist()
            self.rows: list[int] = header[4 + shards : 4 + 2 * shards].tolist()
        except OSError as exc:
            self.close()
            raise CorruptCacheError(path, str(exc).splitlines()[0][:160]) from None
        except CorruptCacheError:
            self.close()
            raise
        self.offsets = [size]
        for i, r in enumerate(self.rows):
            self.offsets.append(self.offsets[-1] + segment_bytes(self.width(i), r))
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
        """Shard ``index``'s (counts, seq, value, pos), read into ``out`` (views of it)."""
        assert self._reader is not None
        start, end = self.offsets[index], self.offsets[index + 1]
        buf = out.get(end - start)
        if self._reader.read_into(start, buf) != end - start:
            raise CorruptCacheError(self.path, f"segment {index} is truncated")
        views = segment_views(buf, self.width(index), self.rows[index])
        if int(views[0].sum(dtype=np.int64)) != self.rows[index] or (views[0] < 0).any():
            raise CorruptCacheError(self.path, f"segment {index} has wrong counts")
        return views

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
