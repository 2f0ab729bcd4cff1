"""The cache's host pipeline: sorting, merging, statistics and a synthetic source end to end,
each against a plain reference computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from autointerp.cache import ActivationCache
from autointerp.cache.encode import Nonzeros, gather_packed, sort_batch
from autointerp.cache.run import cache_prepared
from autointerp.cache.stats import QUANTILES, shard_stats
from autointerp.cache.synthetic import N_BANK, SyntheticEncoder, synthetic_prepared
from autointerp.coders.base import SparseBatch
from autointerp.config import RunConfig, load_config


def random_nonzeros(rng: np.random.Generator, n: int, n_latents: int, n_seqs: int) -> Nonzeros:
    """Rows in (seq, pos) order, as an encoder yields them."""
    key = np.sort(rng.integers(0, n_seqs * 30000, n))
    return Nonzeros(
        latent=rng.integers(0, n_latents, n).astype(np.int32),
        seq=(key // 30000).astype(np.int32),
        pos=(key % 30000).astype(np.int16),
        value=rng.exponential(1.0, n).astype(np.float32),
    )


def as_frame(nz: Nonzeros) -> pl.DataFrame:
    return pl.DataFrame({"latent": nz.latent, "seq": nz.seq, "pos": nz.pos, "value": nz.value})


@pytest.mark.parametrize("n_latents", [40, 70_000])
def test_sort_batch_is_a_stable_sort_by_latent(n_latents: int) -> None:
    nz = random_nonzeros(np.random.default_rng(0), 5000, n_latents, 50)
    got = as_frame(sort_batch(nz, n_latents))
    want = as_frame(nz).with_row_index().sort("latent", "index", maintain_order=True)
    assert got.equals(want.drop("index"))


def test_packed_gather_equals_the_cpu_path() -> None:
    rng = np.random.default_rng(1)
    width, off, n = 15, 1, 3000
    rows = torch.from_numpy(np.sort(rng.integers(0, 8 * width, n)))
    sparse = SparseBatch(
        rows=rows,
        latents=torch.from_numpy(rng.integers(0, 64, n)),
        values=torch.from_numpy(rng.random(n).astype(np.float32)),
    )
    packed = gather_packed(sparse, width, off)
    plain = Nonzeros(
        latent=sparse.latents.numpy().astype(np.int32),
        seq=(rows.numpy() // width).astype(np.int32),
        pos=(rows.numpy() % width + off).astype(np.int16),
        value=sparse.values.numpy(),
    )
    assert as_frame(packed).equals(as_frame(sort_batch(plain, 64)))
    assert [a.dtype for a in (packed.latent, packed.seq, packed.pos, packed.value)] == [
        np.int32,
        np.int32,
        np.int16,
        np.float32,
    ]


@pytest.mark.parametrize("shift", [0.0, 1.0])  # positive values only, then some negative
def test_stats_equal_polars_exactly(shift: float) -> None:
    rng = np.random.default_rng(3)
    df = (
        as_frame(random_nonzeros(rng, 20_000, 50, 300))
        .with_columns(pl.col("value") - np.float32(shift))
        .filter(pl.col("latent") != 7)  # a dead latent
        .unique(["latent", "seq", "pos"])
        .sort("latent", "seq", "pos")
    )
    nz = Nonzeros(*(df[c].to_numpy() for c in df.columns))
    got = pl.from_arrow(shard_stats(nz, 0, 60, 12_345))
    v = pl.col("value")
    want = df.group_by("latent").agg(
        pl.len().cast(pl.Int64).alias("n_active"),
        pl.col("seq").n_unique().cast(pl.Int64).alias("n_windows"),
        v.max().alias("max"),
        v.mean().cast(pl.Float32).alias("mean"),
        *[
            v.quantile(q, interpolation="linear").cast(pl.Float32).alias(f"q{round(q * 100):02d}")
            for q in QUANTILES
        ],
    )
    full = pl.DataFrame({"latent": np.arange(60, dtype=np.int32)}).join(
        want, on="latent", how="left"
    )
    assert got["latent"].to_list() == list(range(60))
    assert got["n_active"].to_list() == full["n_active"].fill_null(0).to_list()
    assert got["n_windows"].to_list() == full["n_windows"].fill_null(0).to_list()
    assert np.array_equal(got["frequency"].to_numpy(), got["n_active"].to_numpy() / 12_345)
    for col in ["max", "mean", *(f"q{round(q * 100):02d}" for q in QUANTILES)]:
        assert got[col].to_list() == full[col].to_list(), col  # nulls for dead latents too
    assert got.filter(pl.col("latent") == 7)["max"].to_list() == [None]


def synthetic_config(run_dir: Path, **extra: object) -> RunConfig:
    return load_config(
        None,
        {
            "run_dir": str(run_dir),
            "cache.hookpoints": ["a", "b"],
            "cache.n_tokens": 96 * 16,
            "cache.ctx_len": 16,
            "cache.batch_size": 8,
            "cache.shard_latents": 24,
            **extra,
        },
    )


def test_synthetic_source_through_the_pipeline(tmp_path: Path) -> None:
    """Cached nonzeros equal the source's batches; many small chunks give the same bytes as one."""
    cfg = synthetic_config(tmp_path / "one")
    timings: dict[str, float] = {}
    cache_prepared(cfg, synthetic_prepared(cfg, l0=5, n_latents=100), False, timings)
    assert {"forward_s", "merge_s", "forward_cpu_s", "merge_cpu_s"} <= set(timings)
    source = SyntheticEncoder(["a"], 8, 16, True, 5, 100)
    batches = []
    for b in range(96 // 8):
        nz = source.bank[b % N_BANK]
        batches.append(as_frame(nz).with_columns(pl.col("seq") + 8 * b))
    want = pl.concat(batches).sort("latent", "seq", "pos")
    for spec in ("a", "b"):
        cache = ActivationCache(cfg.run_dir, spec)
        got = cache.read_latents().rename({"seq_id": "seq"})
        assert got.equals(want)
        assert cache.meta["n_seqs"] == 96 and cache.shards[-1] == (96, 100)
        stats = cache.stats()
        assert stats["n_active"].to_list() == [int((want["latent"] == i).sum()) for i in range(100)]
    many = synthetic_config(tmp_path / "many", **{"cache.chunk_windows": 16})
    cache_prepared(many, synthetic_prepared(many, l0=5, n_latents=100), False)
    assert len(list((tmp_path / "one").rglob("*"))) == len(list((tmp_path / "many").rglob("*")))
    for path in (tmp_path / "one" / "cache").rglob("*.parquet"):
        other = tmp_path / "many" / path.relative_to(tmp_path / "one")
        assert path.read_bytes() == other.read_bytes(), path.name


def test_synthetic_source_rejects_a_wrong_l0(tmp_path: Path) -> None:
    cfg = synthetic_config(tmp_path)
    with pytest.raises(ValueError, match="0 < l0 <= n_latents"):
        synthetic_prepared(cfg, l0=200, n_latents=100)


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_spill_files_of_the_older_version_are_redone(tmp_path: Path, suffix: str) -> None:
    """A _work folder left by an older spill format (Parquet, Arrow IPC) resumes by caching
    its windows again."""
    cfg = synthetic_config(tmp_path / "ref")
    cache_prepared(cfg, synthetic_prepared(cfg, l0=5, n_latents=100), False)
    old = synthetic_config(tmp_path / "old")
    prep = synthetic_prepared(old, l0=5, n_latents=100)
    for job in prep.jobs:  # what a killed run of that version leaves
        (job.layout.work / "chunks").mkdir(parents=True)
        (job.layout.work / "chunks" / f"chunk-000000{suffix}").write_bytes(b"PAR1")
        job.layout.done.write_text('{"n_chunks": 1, "n_seqs": 96}')
    cache_prepared(old, prep, False)
    for path in (tmp_path / "ref" / "cache").rglob("*.parquet"):
        assert (
            path.read_bytes()
            == (tmp_path / "old" / path.relative_to(tmp_path / "ref")).read_bytes()
        )
    assert not list((tmp_path / "old").rglob("_work"))


def test_part_files_encoding_and_parts_of_the_former_encoding(tmp_path: Path) -> None:
    """Parts are lz4 with delta-encoded latent/seq_id and non-null columns; a cache holding a
    part of the former encoding (zstd, plain, nullable: a resume across versions) reads the
    same rows."""
    import pyarrow.parquet as pq

    cfg = synthetic_config(tmp_path, **{"cache.hookpoints": ["a"]})
    cache_prepared(cfg, synthetic_prepared(cfg, l0=5, n_latents=100), False)
    cache = ActivationCache(cfg.run_dir, "a")
    want = cache.read_latents()
    part = cache.part_files()[1]
    meta = pq.ParquetFile(part).metadata
    assert [f.nullable for f in pq.read_schema(part)] == [False] * 4
    encodings = [meta.row_group(0).column(i).encodings for i in range(4)]
    assert ["DELTA_BINARY_PACKED" in e for e in encodings] == [True, True, False, False]
    assert {meta.row_group(0).column(i).compression for i in range(4)} == {"LZ4"}
    table = pq.read_table(part)
    old = table.cast(pa.schema([pa.field(f.name, f.type) for f in table.schema]))
    pq.write_table(old, part, compression="zstd", use_dictionary=False, write_page_checksum=True)
    assert pq.read_schema(part).field("latent").nullable
    assert cache.read_latents().equals(want)
    assert cache.read_latents(20, 60).equals(want.filter(pl.col("latent").is_between(20, 59)))


@pytest.mark.parametrize("max_bins", [1 << 22, 0])  # radix select, then sorting every segment
def test_order_statistics_equal_a_sort(max_bins: int, monkeypatch: pytest.MonkeyPatch) -> None:
    import autointerp.cache.stats as stats

    monkeypatch.setattr(stats, "MAX_BINS", max_bins)
    rng = np.random.default_rng(4)
    counts = np.array([1, 5, 3000, 2, 700, 40_000])
    values = np.concatenate(
        [
            rng.exponential(1.0, 3006).astype(np.float32),
            np.full(702, np.float32(2.5)),  # ties: one bin holds the whole segment
            (rng.random(40_000) * 1e6).astype(np.float32) ** 2,  # spread over many top bits
        ]
    )
    key = values.view(np.uint32)
    ranks = np.stack([rng.integers(0, c, 7) for c in counts])
    ranks[:, 0], ranks[:, 1] = 0, counts - 1
    got = stats.order_statistics(key, counts, ranks)
    first = np.cumsum(counts) - counts
    for i, (a, c) in enumerate(zip(first, counts, strict=True)):
        assert np.array_equal(got[i], np.sort(key[a : a + c])[ranks[i]])
