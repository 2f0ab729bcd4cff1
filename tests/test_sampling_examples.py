"""Examples built from synthetic caches, checked against brute force over the dense arrays."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from synthetic_cache import random_cache

from autointerp.sampling import SampleConfig, SplitMix
from autointerp.sampling.build import build_examples
from autointerp.sampling.config import SPLITS
from autointerp.sampling.hashing import split_of_seqs
from autointerp.sampling.schema import SCHEMA

N_LAT = 48


@pytest.fixture(scope="module")
def built(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, np.ndarray, np.ndarray, pl.DataFrame]:
    run = tmp_path_factory.mktemp("run")
    tokens, dense = random_cache(run, n_latents=N_LAT)
    decoder = torch.randn(N_LAT, 8, generator=torch.Generator().manual_seed(0))
    cfg = SampleConfig(seed=7, window_len=16, placement="peak", peak_offset=10, n_quantiles=5)
    [path] = build_examples(run, cfg, decoder=decoder, progress=False)
    return run, tokens, dense, pl.read_parquet(path)


def test_columns_match_documented_schema(built) -> None:
    *_, df = built
    assert dict(df.schema) == SCHEMA
    doc = (Path(__file__).parents[1] / "docs" / "examples.md").read_text()
    for col in SCHEMA:
        assert f"`{col}`" in doc


def test_windows_match_cache_exactly(built) -> None:
    _, tokens, dense, df = built
    rows = df.filter(pl.col("kind") != "skipped")
    for r in rows.iter_rows(named=True):
        s, a, lat = r["seq_id"], r["start"], r["latent"]
        assert r["tokens"] == tokens[s, a : a + 16].tolist()
        assert np.array_equal(np.array(r["activations"], np.float32), dense[s, a : a + 16, lat])
        assert r["max_activation"] == pytest.approx(dense[s, a : a + 16, lat].max())


def test_no_contrast_window_fires(built) -> None:
    _, _, dense, df = built
    contrast = df.filter(pl.col("kind").is_in(["random", "similar", "neighbour"]))
    assert contrast.height > 0
    for r in contrast.iter_rows(named=True):
        assert not dense[r["seq_id"], r["start"] : r["start"] + 16, r["latent"]].any()
        assert r["peak_pos"] is None and r["quantile"] is None


def test_activating_windows_fire_and_peak_sits_at_offset(built) -> None:
    _, _, dense, df = built
    act = df.filter(pl.col("kind") == "activating")
    for r in act.iter_rows(named=True):
        seq_max = dense[r["seq_id"], :, r["latent"]].max()
        assert r["max_activation"] == seq_max > 0  # peak placement: the sequence's max
        peak_abs = r["start"] + r["peak_pos"]
        expected_start = int(np.clip(peak_abs - 10, 1, 32 - 16))  # never over the BOS
        assert r["start"] == expected_start


def test_topk_are_the_top_of_their_split(built) -> None:
    _, _, dense, df = built
    split = split_of_seqs(dense.shape[0], (0.4, 0.2, 0.4), 7)
    seq_max = dense.max(axis=1)  # [n_seqs, n_latents]
    topk = df.filter(pl.col("sampler") == "topk")
    for lat, grp in topk.group_by("latent"):
        train = np.sort(seq_max[split == 0, lat[0]])[::-1]
        train = train[train > 0]
        got = np.sort(grp["max_activation"].to_numpy())[::-1]
        assert len(got) == min(10, len(train))
        assert np.array_equal(got, train[: len(got)])


def test_quantile_bins_balanced(built) -> None:
    _, _, dense, df = built
    split = split_of_seqs(dense.shape[0], (0.4, 0.2, 0.4), 7)
    seq_max = dense.max(axis=1)
    q = df.filter(pl.col("sampler") == "quantile")
    topk_seqs = df.filter(pl.col("sampler") == "topk").select("latent", "seq_id")
    for lat in q["latent"].unique().to_list():
        vals = seq_max[:, lat]
        seqs = np.flatnonzero(vals > 0)
        order = np.lexsort((seqs, -vals[seqs]))  # max desc, seq asc
        n = len(seqs)
        bins = np.empty(n, dtype=int)
        bins[order] = (n - 1 - np.arange(n)) * 5 // n
        bin_of = dict(zip(seqs.tolist(), bins.tolist(), strict=True))
        taken = set(topk_seqs.filter(pl.col("latent") == lat)["seq_id"].to_list())
        for k, name in enumerate(SPLITS):
            per_bin = getattr(SampleConfig(), name).quantile // 5  # 5 bins (the fixture's)
            mine = q.filter((pl.col("latent") == lat) & (pl.col("split") == name))
            for b in range(5):
                avail = sum(1 for s in seqs if split[s] == k and bin_of[s] == b and s not in taken)
                got = mine.filter(pl.col("quantile") == b)
                assert got.height == min(per_bin, avail)
                assert all(bin_of[s] == b for s in got["seq_id"].to_list())


def test_splits_disjoint_and_shared_across_latents(built) -> None:
    _, _, dense, df = built
    rows = df.filter(pl.col("kind") != "skipped")
    per_seq = rows.group_by("seq_id").agg(pl.col("split").n_unique())
    assert per_seq["split"].max() == 1  # one split per sequence, whatever the latent
    split = split_of_seqs(dense.shape[0], (0.4, 0.2, 0.4), 7)
    assert (np.array(SPLITS)[split[rows["seq_id"].to_numpy()]] == rows["split"].to_numpy()).all()
    dup = rows.group_by("latent", "seq_id", "start").len().filter(pl.col("len") > 1)
    assert dup.height == 0


def test_skipped_latents_have_a_reason(built) -> None:
    _, _, dense, df = built
    n_active = (dense > 0).sum(axis=(0, 1))
    skipped = df.filter(pl.col("kind") == "skipped")
    assert sorted(skipped["latent"].to_list()) == np.flatnonzero(n_active < 10).tolist()
    assert skipped.filter(pl.col("latent") == 0)["reason"].item().startswith("dead")
    assert "< min_activations=10" in skipped.filter(pl.col("latent") == 1)["reason"].item()
    live = set(range(N_LAT)) - set(skipped["latent"].to_list())
    assert set(df.filter(pl.col("kind") == "activating")["latent"].to_list()) == live


def test_normalised_activations(built) -> None:
    _, _, dense, df = built
    lat_max = dense.max(axis=(0, 1))
    for r in df.filter(pl.col("kind") == "activating").head(300).iter_rows(named=True):
        a = np.array(r["activations"], np.float32)
        want = np.clip(np.rint(a * (10.0 / lat_max[r["latent"]])), 0, 10)
        want[(a > 0) & (want == 0)] = 1
        assert r["activations_norm"] == want.astype(int).tolist()
    top = df.filter(
        (pl.col("sampler") == "topk") & (pl.col("rank") == 0) & (pl.col("split") == "train")
    )
    assert top.height > 0
    for r in top.iter_rows(named=True):
        if r["max_activation"] == lat_max[r["latent"]]:
            assert max(r["activations_norm"]) == 10


def test_similar_windows_hold_characteristic_tokens(built) -> None:
    _, tokens, dense, df = built
    sim = df.filter(pl.col("kind") == "similar")
    assert sim.height > 0
    counts = np.bincount(tokens.reshape(-1), minlength=tokens.max() + 1)
    idf = np.log((tokens.size + 1) / (counts + 1.0))
    top1 = []
    for lat, grp in sim.group_by("latent"):
        weight = (
            np.bincount(
                tokens.reshape(-1), weights=dense[..., lat[0]].reshape(-1), minlength=len(counts)
            )
            * idf
        )
        order = np.lexsort((np.arange(len(weight)), -weight))
        char = set(order[:5][weight[order[:5]] > 0].tolist())
        for toks in grp["tokens"].to_list():
            assert char & set(toks)
            top1.append(int(order[0]) in toks)
    # latent l is triggered by token l % 50: its silent windows around it come first
    assert np.mean(top1) > 0.5


def test_neighbour_rows_come_from_decoder_neighbours(built) -> None:
    run, _, dense, df = built
    dec = torch.randn(N_LAT, 8, generator=torch.Generator().manual_seed(0))
    dec = dec / dec.norm(dim=1, keepdim=True)
    cos = (dec @ dec.T).numpy()
    np.fill_diagonal(cos, -np.inf)
    nb = df.filter(pl.col("kind") == "neighbour")
    assert nb.height > 0
    seq_max = dense.max(axis=1)
    for r in nb.iter_rows(named=True):
        lat, src = r["latent"], r["source_latent"]
        assert src in np.argsort(-cos[lat], kind="stable")[:10].tolist()
        assert r["source_similarity"] == pytest.approx(cos[lat, src], abs=1e-5)
        assert seq_max[r["seq_id"], src] > 0  # a firing window of the neighbour


def test_counts_per_split(built) -> None:
    *_, df = built
    counts = df.filter(pl.col("kind") != "skipped").group_by("latent", "split", "sampler").len()
    d = SampleConfig()
    want = {
        ("train", "topk"): d.train.topk,
        ("train", "random"): d.train.random,
        ("test", "random"): d.test.random,
    }
    for (split, sampler), n in want.items():
        sel = counts.filter((pl.col("split") == split) & (pl.col("sampler") == sampler))
        assert sel["len"].max() <= n
        assert (sel["len"] == n).mean() > 0.8


def test_seed_determinism_and_resume(tmp_path: Path) -> None:
    random_cache(tmp_path / "a", n_latents=20, n_seqs=80)
    random_cache(tmp_path / "b", n_latents=20, n_seqs=80)
    random_cache(tmp_path / "c", n_latents=20, n_seqs=80)
    dec = torch.randn(20, 8, generator=torch.Generator().manual_seed(1))
    cfg = SampleConfig(seed=3, window_len=8)
    [pa] = build_examples(tmp_path / "a", cfg, decoder=dec, progress=False)
    # b: built in two runs (resume): first a subset, then everything
    build_examples(tmp_path / "b", cfg, decoder=dec, latents=[3, 4, 17], progress=False)
    parts = sorted((tmp_path / "b" / "examples" / "_parts").rglob("part-*.parquet"))
    stamps = {p: p.stat().st_mtime_ns for p in parts}
    [pb] = build_examples(tmp_path / "b", cfg, decoder=dec, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())  # not rebuilt
    a, b = pl.read_parquet(pa), pl.read_parquet(pb)
    assert a.sort("latent", maintain_order=True).equals(b.sort("latent", maintain_order=True))
    [pc] = build_examples(tmp_path / "c", cfg, decoder=dec, progress=False)
    assert pa.read_bytes() == pc.read_bytes()  # byte-identical for the same seed
    other = build_examples(
        tmp_path / "c",
        cfg.model_copy(update={"seed": 4}),
        decoder=dec,
        overwrite=True,
        progress=False,
    )[0]
    assert not pl.read_parquet(other).equals(a)
    with pytest.raises(ValueError, match="another sample config"):
        build_examples(tmp_path / "c", cfg, decoder=dec, progress=False)


def test_aligned_windows_with_ragged_last_block(tmp_path: Path) -> None:
    tokens, dense = random_cache(tmp_path, n_latents=16, n_seqs=60, ctx_len=30)
    mix = SplitMix(topk=50, uniform=5, random=3, similar=3)
    cfg = SampleConfig(
        seed=1, window_len=8, placement="aligned", train=mix, selection=mix, test=mix
    )
    [path] = build_examples(tmp_path, cfg, progress=False)
    df = pl.read_parquet(path).filter(pl.col("kind") != "skipped")
    assert set(df["start"].unique().to_list()) <= {1, 9, 17, 22}  # blocks after the BOS
    for r in df.iter_rows(named=True):
        s, a, lat = r["seq_id"], r["start"], r["latent"]
        assert r["tokens"] == tokens[s, a : a + 8].tolist()
        assert np.array_equal(np.array(r["activations"], np.float32), dense[s, a : a + 8, lat])
        assert (r["kind"] == "activating") == bool(dense[s, a : a + 8, lat].any())
    # topk=50 per split exhausts small latents: every firing block of the split is present
    lat = 5
    blocks = {(s, a) for s in range(60) for a in (1, 9, 17, 22) if dense[s, a : a + 8, lat].any()}
    got = df.filter((pl.col("latent") == lat) & (pl.col("kind") == "activating"))
    if len(blocks) <= 50 * 0.4:
        assert set(zip(got["seq_id"], got["start"], strict=True)) == blocks


def test_embedding_similar_windows(tmp_path: Path, tiny_model_dir: Path) -> None:
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(tiny_model_dir).vocab_size
    _, dense = random_cache(tmp_path, n_latents=8, n_seqs=40, vocab=min(vocab, 50))
    mix = SplitMix(topk=3, similar=4)
    cfg = SampleConfig(
        seed=0,
        window_len=16,
        similar_embedding_model=str(tiny_model_dir),
        train=mix,
        selection=mix,
        test=mix,
    )
    [path] = build_examples(tmp_path, cfg, progress=False)
    sim = pl.read_parquet(path).filter(pl.col("kind") == "similar")
    assert sim.height > 0 and sim["source_similarity"].null_count() == 0
    for r in sim.iter_rows(named=True):
        assert not dense[r["seq_id"], r["start"] : r["start"] + 16, r["latent"]].any()
    ranks = sim.sort("latent", "split", "rank")
    for _, g in ranks.group_by("latent", "split"):
        assert (np.diff(g["source_similarity"].to_numpy()) <= 1e-6).all()


def test_spread_placement_varies_the_peak_offset_and_never_shows_bos(tmp_path: Path) -> None:
    """Default ('spread') placement: the peak's offset inside activating windows is spread
    over the window (with 'peak' it sat at one offset: a position cue for every judge that
    sees highlights), every window holds its sequence's max, and no window covers the BOS
    that the cache excluded (position 0)."""
    tokens, dense = random_cache(tmp_path, n_latents=N_LAT)
    decoder = torch.randn(N_LAT, 8, generator=torch.Generator().manual_seed(0))
    cfg = SampleConfig(seed=7, window_len=16, n_quantiles=5)
    assert cfg.placement == "spread"
    [path] = build_examples(tmp_path, cfg, decoder=decoder, progress=False)
    df = pl.read_parquet(path).filter(pl.col("kind") != "skipped")
    assert (df["start"] >= 1).all() and not (df["tokens"].list.first() == 0).any()
    act = df.filter(pl.col("kind") == "activating")
    offsets = act["peak_pos"].to_numpy()
    share = np.bincount(offsets, minlength=16) / len(offsets)
    assert (share > 0).sum() == 16 and share.max() < 0.15
    for r in act.iter_rows(named=True):
        assert r["max_activation"] == dense[r["seq_id"], :, r["latent"]].max()
    # the same config gives the same windows (seeded placement)
    again = tmp_path / "again"
    random_cache(again, n_latents=N_LAT)
    [path2] = build_examples(again, cfg, decoder=decoder, progress=False)
    assert pl.read_parquet(path2).equals(pl.read_parquet(path))
