"""Chunk spill files and direct I/O: what is written reads back merged exactly as a full sort
would order it, in both segment layouts; broken files are named; direct I/O on or off and the
synthetic source sorted on the host or not give the same cache bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import autointerp.cache.directio as directio
from autointerp.cache.directio import ALIGN, DIRECT_IO_ENV, AlignedBuffer
from autointerp.cache.encode import Nonzeros, sort_batch
from autointerp.cache.errors import CorruptCacheError
from autointerp.cache.merge import ShardBuffers
from autointerp.cache.run import cache_prepared
from autointerp.cache.spill import SpillFile, SpillWriter, gather_index
from autointerp.cache.synthetic import synthetic_prepared
from autointerp.config import load_config

SHARDS = [(0, 7), (7, 8), (8, 30), (30, 50)]  # one of a single latent; 40-49 never fire


def batches(rng: np.random.Generator, n_batches: int) -> list[Nonzeros]:
    """Latent-sorted batches of 6 windows each, ``seq`` counted from the chunk's start."""
    out = []
    for b in range(n_batches):
        n = 0 if b == 1 else int(rng.integers(250, 600))  # one empty batch
        key = np.sort(rng.choice(6 * 100, n, replace=False))  # distinct (seq, pos)
        nz = Nonzeros(
            latent=rng.integers(0, 40, n).astype(np.int32),
            seq=(key // 100 + 6 * b).astype(np.int32),
            pos=(key % 100).astype(np.int16),
            value=rng.exponential(1.0, n).astype(np.float32),
        )
        out.append(sort_batch(nz, 50))
    return out


def frame(nz: Nonzeros) -> pl.DataFrame:
    cols = {"latent": nz.latent, "seq": nz.seq, "pos": nz.pos, "value": nz.value}
    return pl.DataFrame(cols)


def test_gather_index_equals_concatenated_ranges() -> None:
    rng = np.random.default_rng(0)
    starts = rng.integers(0, 1000, 200)
    lengths = rng.integers(0, 5, 200) * (rng.random(200) < 0.7)
    want = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lengths, strict=True)])
    out = np.full(len(want) + 3, -1, np.int64)
    assert np.array_equal(gather_index(starts, lengths, out), want)
    assert len(gather_index(starts[:0], lengths[:0], out)) == 0


@pytest.mark.parametrize("max_slices", [SpillWriter.MAX_SLICES, 0])  # runs kept / merged
def test_spill_reads_back_merged_as_a_full_sort(tmp_path: Path, max_slices: int) -> None:
    rng = np.random.default_rng(1)
    chunks = [batches(rng, 5), batches(rng, 1), batches(rng, 4)]
    writer = SpillWriter()
    writer.MAX_SLICES = max_slices
    files, offset = [], 0
    for c, runs in enumerate(chunks):
        for nz in runs:
            nz.seq += np.int32(offset)
        offset += 6 * len(runs)
        path = tmp_path / f"chunk-{c}.spill"
        cols = [(nz.counts, nz.seq, nz.value, nz.pos) for nz in runs]
        writer.write(path, cols, SHARDS, 50)
        assert path.stat().st_size % ALIGN == 0
        files.append(SpillFile(path, len(SHARDS)))
        assert files[-1].n_runs == (len(runs) if max_slices else 1)
    everything = pl.concat([frame(nz) for runs in chunks for nz in runs])
    bufs = ShardBuffers()
    for i, (start, end) in enumerate(SHARDS):
        got = frame(bufs.merge(files, i, start, end))
        want = everything.filter(pl.col("latent").is_between(start, end - 1))
        assert got.equals(want.sort("latent", "seq", "pos"))
    for f in files:
        f.close()
    bufs.release()


def test_broken_spill_files_are_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "chunk-000000.spill"
    runs = batches(rng, 3)
    SpillWriter().write(path, [(n.counts, n.seq, n.value, n.pos) for n in runs], SHARDS, 50)
    good = path.read_bytes()
    with pytest.raises(CorruptCacheError, match="4 shards where 5"):
        SpillFile(path, 5)
    path.write_bytes(good[:-ALIGN])
    with pytest.raises(CorruptCacheError, match="chunk-000000.spill is corrupt.*bytes where"):
        SpillFile(path, 4)
    path.write_bytes(b"PAR1" + good[4:])
    with pytest.raises(CorruptCacheError, match="not a spill file of this version"):
        SpillFile(path, 4)
    garbled = bytearray(good)  # the first segment's counts start after the (one-page) header
    garbled[ALIGN : ALIGN + 4] = np.int32(-5).tobytes()
    path.write_bytes(bytes(garbled))
    f = SpillFile(path, 4)
    with pytest.raises(CorruptCacheError, match="segment 0 has wrong counts"):
        f.read_segment(0, AlignedBuffer())
    f.close()


def test_aligned_buffer_is_reused_and_grows() -> None:
    buf = AlignedBuffer()
    big = buf.get(10_000)
    assert big.ctypes.data % ALIGN == 0 and len(big) == 10_000
    assert np.shares_memory(buf.get(5_000), big)  # smaller: the same memory
    assert len(buf.typed(3_000_000, np.int32)) == 3_000_000  # larger: grown
    buf.release()


def synthetic_bytes(run_dir: Path, **kw: object) -> dict[str, bytes]:
    cfg = load_config(
        None,
        {
            "run_dir": str(run_dir),
            "cache.hookpoints": ["a"],
            "cache.n_tokens": 2000,
            "cache.ctx_len": 16,
            "cache.batch_size": 8,
            "cache.chunk_windows": 32,
        },
    )
    prep = synthetic_prepared(cfg, l0=6, n_latents=120, **kw)  # type: ignore[arg-type]
    cache_prepared(cfg, prep, False)
    root = run_dir / "cache"
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*.parquet")}


def test_direct_io_and_host_sort_do_not_change_the_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct = []
    write = directio._write_direct

    def spy(*args: object) -> bool:
        done = write(*args)  # type: ignore[arg-type]
        direct.append(done)
        return done

    monkeypatch.setattr(directio, "_write_direct", spy)
    reference = synthetic_bytes(tmp_path / "direct")
    assert direct  # spill and part files went through the direct path (or its fallback)
    monkeypatch.setenv(DIRECT_IO_ENV, "0")
    direct.clear()
    assert synthetic_bytes(tmp_path / "buffered") == reference
    assert not direct
    monkeypatch.delenv(DIRECT_IO_ENV)
    assert synthetic_bytes(tmp_path / "host_sort", host_sort=True) == reference
    assert {"a/tokens.parquet", "a/latent_stats.parquet"} < set(reference)
