"""Units of the sampling stage: neighbours, latent subsets, CLI, and a property test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from synthetic_cache import random_cache
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.sampling import SampleConfig, SplitMix
from autointerp.sampling.build import build_examples
from autointerp.sampling.latents import parse_latents
from autointerp.sampling.neighbours import decoder_neighbours


def test_neighbours_chunked_equal_brute_force() -> None:
    dec = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    q = np.arange(0, 300, 7)
    got = decoder_neighbours(dec, q, k=5, chunk=8)
    unit = dec / dec.norm(dim=1, keepdim=True)
    cos = (unit @ unit.T).numpy()
    np.fill_diagonal(cos, -np.inf)
    for lat, grp in got.group_by("latent"):
        want = np.argsort(-cos[lat[0]], kind="stable")[:5]
        assert grp.sort("nb_rank")["neighbour"].to_list() == want.tolist()
        assert lat[0] not in grp["neighbour"].to_list()


def test_parse_latents(tmp_path: Path) -> None:
    assert parse_latents("0:4") == [0, 1, 2, 3]
    assert parse_latents("1,5,9") == [1, 5, 9]
    f = tmp_path / "l.txt"
    f.write_text("3 4\n7,8\n")
    assert parse_latents(f"@{f}") == [3, 4, 7, 8]
    assert parse_latents(None) is None
    for bad in ("4:2", "x", "@/nonexistent"):
        with pytest.raises(ValueError):
            parse_latents(bad)


def test_cli_sample_subset_then_resume(tmp_path: Path) -> None:
    from autointerp.config import RunConfig, save_config

    random_cache(tmp_path, n_latents=16, n_seqs=60)
    runner = CliRunner()
    args = ["sample", str(tmp_path), "--latents", "3:6", "--no-progress", "--seed", "2"]
    # the synthetic cache names no coder: neighbour windows need decoder rows -> one-line error
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and "decoder" in res.output
    no_nb = SplitMix(topk=3, quantile=3, random=2, similar=2)
    cfg = RunConfig(sample=SampleConfig(train=no_nb, selection=no_nb, test=no_nb))
    save_config(cfg, tmp_path)  # run.yaml supplies the defaults
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    out = Path(res.output.strip().splitlines()[-1])
    assert sorted(pl.read_parquet(out)["latent"].unique().to_list()) == [3, 4, 5]
    parts = list((tmp_path / "examples" / "_parts").rglob("part-*.parquet"))
    res = runner.invoke(app, [*args[:3], "1,4,7", *args[4:]])
    assert res.exit_code == 0, res.output
    assert sorted(pl.read_parquet(out)["latent"].unique().to_list()) == [1, 3, 4, 5, 7]
    assert len(list((tmp_path / "examples" / "_parts").rglob("part-*.parquet"))) == len(parts) + 1


@settings(max_examples=12, deadline=None)
@given(
    seed=st.integers(0, 1000),
    window=st.integers(2, 11),
    placement=st.sampled_from(["spread", "peak", "aligned"]),
    n_q=st.integers(1, 4),
)
def test_property_windows_exact_and_contrast_silent(
    tmp_path_factory: pytest.TempPathFactory, seed: int, window: int, placement: str, n_q: int
) -> None:
    run = tmp_path_factory.mktemp("prop")
    tokens, dense = random_cache(run, n_latents=10, n_seqs=30, ctx_len=12, seed=seed, shard=4)
    mix = SplitMix(topk=2, quantile=n_q * 2, uniform=2, random=2, similar=2, neighbour=2)
    cfg = SampleConfig(
        seed=seed,
        window_len=window,
        placement=placement,
        n_quantiles=n_q,
        min_activations=3,
        train=mix,
        selection=mix,
        test=mix,
    )
    dec = torch.randn(10, 4, generator=torch.Generator().manual_seed(seed))
    [path] = build_examples(run, cfg, decoder=dec, progress=False)
    df = pl.read_parquet(path).filter(pl.col("kind") != "skipped")
    assert df.group_by("seq_id").agg(pl.col("split").n_unique())["split"].max() == 1
    assert df.group_by("latent", "seq_id", "start").len()["len"].max() == 1
    for r in df.iter_rows(named=True):
        s, a, lat = r["seq_id"], r["start"], r["latent"]
        span = dense[s, a : a + window, lat]
        assert r["tokens"] == tokens[s, a : a + window].tolist()
        assert a >= 1  # the cache excluded BOS: no window shows it
        assert np.array_equal(np.array(r["activations"], np.float32), span)
        assert (r["kind"] == "activating") == bool(span.any())


def test_ranked_flags_match_sorting() -> None:
    """Quantile bins and top-k from per-latent order statistics equal a full sort's,
    including latents with fewer windows than bins and tied maxima."""
    from autointerp.sampling.activating import _packed_keys, _ranked_flags, run_starts

    rng = np.random.default_rng(1)
    for _ in range(40):
        sizes = rng.integers(1, 60, int(rng.integers(1, 20)))
        lat = np.repeat(np.arange(len(sizes)) + 100, sizes).astype(np.int32)
        n = len(lat)
        vmax = (np.round(rng.random(n) * 3, 1) + 0.1).astype(np.float32)
        split = rng.integers(0, 3, n).astype(np.int8)
        nb, n_topk = int(rng.integers(1, 12)), [int(rng.integers(0, 5)), 0, 2]
        starts = run_starts(lat)
        counts = np.diff(np.append(starts, n))
        qbin, top = _ranked_flags(_packed_keys(lat, vmax), starts, counts, split, nb, n_topk)
        for s0, c in zip(starts, counts, strict=True):
            idx = np.arange(s0, s0 + c)
            order = idx[np.lexsort((idx, -vmax[idx]))]
            rank = np.empty(c, dtype=np.int64)
            rank[order - s0] = np.arange(c)
            assert np.array_equal(qbin[idx], (c - 1 - rank) * nb // c)
            for k, t in enumerate(n_topk):
                want = [i for i in order if split[i] == k][:t]
                got = np.flatnonzero(top[idx] & (split[idx] == k)) + s0
                assert set(got.tolist()) == {int(i) for i in want}
