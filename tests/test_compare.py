"""`autointerp compare`: latent matching on planted pairs with known answers, explanation
similarity against random pairs, orphans, files and columns (docs/compare.md), errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from autointerp.cache import ActivationCache
from autointerp.cli import app
from autointerp.compare import CompareConfig, compare_runs
from autointerp.compare.correlation import activation_correlation
from autointerp.compare.matching import decoder_similarity, match
from autointerp.compare.similarity import tfidf_vectors
from tests.coder_files import write_sparsify
from tests.synthetic_cache import random_cache, write_nonzeros

HP = "model.layers.1"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "compare.md"


def sparsify_from(folder: Path, w: dict[str, torch.Tensor], k: int = 4) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({n: t.contiguous() for n, t in w.items()}, str(folder / "sae.safetensors"))
    n, d = w["encoder.weight"].shape
    cfg = {
        "num_latents": n,
        "k": k,
        "normalize_decoder": True,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d,
        "expansion_factor": 1,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def permuted(w: dict[str, torch.Tensor], rows: np.ndarray) -> dict[str, torch.Tensor]:
    """Latent j of the copy is latent ``rows[j]`` of the original."""
    idx = torch.as_tensor(rows)
    return {n: (t[idx] if n != "b_dec" else t) for n, t in w.items()}


def run_from(run: Path, tokens, dense, coder: Path | str = "", latent_map=None) -> Path:
    """A run whose cache holds ``dense`` (latent ids renamed by ``latent_map``)."""
    seq, pos, lat = np.nonzero(dense > 0)
    vals = dense[seq, pos, lat]
    n = dense.shape[2] if latent_map is None else int(latent_map.max()) + 1
    lat = lat if latent_map is None else latent_map[lat]
    write_nonzeros(run, HP, tokens, lat, seq, pos, vals, n, shard=16, coder=str(coder))
    return run


def write_explanations(run: Path, texts: dict[int, str]) -> None:
    pl.DataFrame(
        {
            "hookpoint": HP,
            "latent": pl.Series(list(texts), dtype=pl.Int32),
            "explanation_id": [f"id{abs(hash(t))}" for t in texts.values()],
            "explainer": "default",
            "selected": True,
            "status": "ok",
            "explanation": list(texts.values()),
        }
    ).write_parquet(run / "explanations.parquet")


@pytest.fixture
def planted(tmp_path: Path):
    """Run A (48 latents, sparsify coder) and run B: a permuted copy of A's coder and cache."""
    coder_a = write_sparsify(tmp_path / "coder_a", d_in=64, n_latents=48, k=4, seed=0)
    perm = np.random.default_rng(1).permutation(48)  # B latent j = A latent perm[j]
    inv = np.argsort(perm)  # A latent i = B latent inv[i]
    coder_b = sparsify_from(tmp_path / "coder_b", permuted(coder_a.weights, perm))
    tokens, dense = random_cache(tmp_path / "tmp_a", n_latents=48)
    run_a = run_from(tmp_path / "a", tokens, dense, coder_a.folder)
    run_b = run_from(tmp_path / "b", tokens, dense, coder_b, latent_map=inv)
    return run_a, run_b, inv, dense


@pytest.mark.parametrize("budget_mb", [512.0, 1e-6])
def test_permuted_coder_matched_back_exactly(planted, tmp_path, budget_mb):
    run_a, run_b, inv, _ = planted
    cfg = CompareConfig(budget_mb=budget_mb, embedding_model="tfidf")
    res = compare_runs(run_a, run_b, out_dir=tmp_path / "out", config=cfg)
    m = res.matches.sort("latent_a")
    assert res.summary["by"] == "decoder"
    assert res.summary["method"] == ("assignment" if budget_mb > 1 else "best")
    assert m["latent_a"].to_list() == list(range(48))
    assert m["latent_b"].to_list() == inv.tolist()
    np.testing.assert_allclose(m["decoder_cos"].to_numpy(), 1.0, atol=1e-5)
    assert m["mutual"].all() and m["above_threshold"].all()
    # same tokens: the activation correlation of the pairs is computed too (1; dead latent: NaN)
    corr = m["act_corr"].to_numpy()
    assert np.isnan(corr[0]) and np.allclose(corr[1:], 1.0, atol=1e-5)
    assert res.orphans.is_empty()
    dec = res.summary["metrics"]["decoder_cos"]
    assert dec["beat_random_q95"] == 48 and dec["random"]["q95"] < 0.5


def test_activation_correlation_exact_and_matches_permutation(planted, tmp_path):
    run_a, run_b, inv, dense = planted
    ca, cb = ActivationCache(run_a, HP), ActivationCache(run_b, HP)
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, 48, 300), rng.integers(0, 48, 300)], axis=1)
    sim = activation_correlation(ca, cb, [pairs], block_nonzeros=50)  # many A blocks
    x = dense[:, 1:, :].reshape(-1, 48).astype(np.float64)  # the counted positions
    with np.errstate(invalid="ignore", divide="ignore"):
        brute = np.corrcoef(x.T)[:, np.argsort(inv)]  # columns in B's latent order
    np.testing.assert_allclose(sim.lookups[0], brute[pairs[:, 0], pairs[:, 1]], atol=1e-5)
    co = np.isfinite(sim.dense)
    np.testing.assert_allclose(sim.dense[co], brute[co], atol=1e-5)
    assert np.array_equal(sim.best_a[1:], inv[1:]) and sim.best_a[0] == -1
    m = match(sim, 48, 48)
    assert m.method == "assignment" and dict(zip(m.a, m.b, strict=True)) == {
        i: inv[i] for i in range(1, 48)
    }
    # no coder in the meta: matched by activation; the dead latent is an orphan on both sides
    run_a2 = run_from(tmp_path / "a2", *_tokens_dense(run_a, dense))
    run_b2 = run_from(tmp_path / "b2", *_tokens_dense(run_a, dense), latent_map=inv)
    res = compare_runs(
        run_a2, run_b2, out_dir=tmp_path / "o", config=CompareConfig(embedding_model="tfidf")
    )
    assert res.summary["by"] == "activation" and res.matches["decoder_cos"].is_nan().all()
    assert sorted(zip(res.orphans["side"], res.orphans["latent"], strict=True)) == [
        ("a", 0),
        ("b", inv[0]),
    ]


def _tokens_dense(run: Path, dense):
    return ActivationCache(run, HP).tokens(), dense


def test_different_widths_and_orphans(tmp_path):
    a = write_sparsify(tmp_path / "ca", d_in=64, n_latents=48, k=4, seed=0)
    fresh = write_sparsify(tmp_path / "cf", d_in=64, n_latents=24, k=4, seed=7).weights
    keep = np.random.default_rng(2).permutation(48)[:40]  # B 0..39: copies; 40..63: new
    wb = {
        n: torch.cat([a.weights[n][torch.as_tensor(keep)], fresh[n]])
        if n != "b_dec"
        else a.weights[n]
        for n in a.weights
    }
    coder_b = sparsify_from(tmp_path / "cb", wb)
    tok_a, dense_a = random_cache(tmp_path / "x", n_latents=48, seed=0)
    tok_b, dense_b = random_cache(tmp_path / "y", n_latents=64, seed=5)  # other tokens
    run_a = run_from(tmp_path / "a", tok_a, dense_a, a.folder)
    run_b = run_from(tmp_path / "b", tok_b, dense_b, coder_b)
    (run_a / "scores").mkdir()
    pl.DataFrame(
        {
            "hookpoint": HP,
            "latent": pl.Series(range(48), dtype=pl.Int32),
            "status": ["ok", "failed"] + ["ok"] * 46,
            "balanced_accuracy": np.arange(48) / 100,
        }
    ).write_parquet(run_a / "scores" / "detection.parquet")
    res = compare_runs(
        run_a, run_b, out_dir=tmp_path / "o", config=CompareConfig(embedding_model="tfidf")
    )
    s = res.summary
    assert (s["n_latents_a"], s["n_latents_b"], s["same_tokens"]) == (48, 64, False)
    good = res.matches.filter(pl.col("above_threshold"))
    assert dict(zip(good["latent_a"], good["latent_b"], strict=True)) == {
        int(k): j for j, k in enumerate(keep)
    }
    assert res.matches["act_corr"].is_nan().all()
    orph = res.orphans
    assert sorted(orph.filter(pl.col("side") == "a")["latent"]) == sorted(
        set(range(48)) - set(keep.tolist())
    )
    assert sorted(orph.filter(pl.col("side") == "b")["latent"]) == list(range(40, 64))
    assert (orph["best_score"] < 0.5).all()
    lone_a = orph.filter(pl.col("side") == "a").sort("latent")
    expected = [None if i == 1 else i / 100 for i in lone_a["latent"]]
    assert lone_a["score_detection"].to_list() == pytest.approx(expected)
    assert orph.filter(pl.col("side") == "b")["score_detection"].is_null().all()


def test_explanations_files_columns_and_cli(planted, tmp_path):
    run_a, run_b, inv, _ = planted
    topics = [
        "digits in numbers",
        "open parenthesis",
        "the keyword def",
        "indentation spaces",
        "string quotes",
        "import statements",
        "comments after hash",
        "class names",
    ]
    text_a = {i: f"{topics[i % 8]} variant {i}" for i in range(48)}
    write_explanations(run_a, text_a)
    write_explanations(run_b, {int(inv[i]): t for i, t in text_a.items() if i != 5})
    result = CliRunner().invoke(
        app, ["compare", str(run_a), str(run_b), "--embedding", "tfidf", "--random-pairs", "500"]
    )
    assert result.exit_code == 0, result.output
    out = run_a.parent / "compare" / f"a.{HP}__b.{HP}"
    assert str(out) in result.output and "explanation_sim" in result.output
    matches = pl.read_parquet(out / "matches.parquet").sort("latent_a")
    sim = matches["explanation_sim"].to_numpy()
    assert np.isnan(sim[5]) and np.allclose(np.delete(sim, 5), 1.0, atol=1e-5)
    assert matches["explanation_b"][5] is None
    summary = json.loads((out / "summary.json").read_text())
    e = summary["metrics"]["explanation_sim"]
    assert e["matched"]["n"] == 47 and e["random"]["mean"] < 0.5
    assert e["beat_random_q95"] == 47 and summary["embedding"] == "tfidf"
    documented = set(re.findall(r"^\| `(\w+)`", DOCS.read_text(), flags=re.M))
    orphans = pl.read_parquet(out / "orphans.parquet")
    assert set(matches.columns) | set(orphans.columns) <= documented
    assert set(summary) - {"metrics"} <= documented


def test_sentence_embeddings_rank_paraphrases_above_random(tmp_path):
    from autointerp.compare.similarity import TextSimilarity, pair_similarity

    a = pl.DataFrame(
        {
            "latent": [0, 1, 2],
            "explanation_id": ["a0", "a1", "a2"],
            "explanation": ["numbers and digits", "opening brackets", "the word def"],
        }
    )
    b = pl.DataFrame(
        {
            "latent": [0, 1, 2],
            "explanation_id": ["b0", "b1", "b2"],
            "explanation": [
                "numeric digits",
                "open parentheses",
                "function definition keyword def",
            ],
        }
    )
    ts = TextSimilarity()
    assert ts.backend == "all-MiniLM-L6-v2"
    va, vb = ts.vectors([tmp_path / "a", tmp_path / "b"], [a, b])
    same = pair_similarity(va, vb, np.arange(3), np.arange(3))
    cross = pair_similarity(va, vb, np.array([0, 1, 2]), np.array([1, 2, 0]))
    assert (same > cross.max()).all()
    assert (tmp_path / "a" / "embeddings").is_dir()  # stored per run by the shared module


def test_tfidf_and_decoder_blocks():
    v = tfidf_vectors(["open bracket", "open bracket", "digit", ""])
    g = (v @ v.T).toarray()
    assert g[0, 1] == pytest.approx(1.0) and g[0, 2] == 0.0 and g[3, 3] == 0.0
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 8)), rng.normal(size=(70, 8))
    full = decoder_similarity(a, b)
    tiny = decoder_similarity(a, b, budget_mb=1e-6, block_mb=1e-4)  # one row per block
    assert tiny.dense is None and full.dense is not None
    assert np.array_equal(full.best_a, tiny.best_a) and np.array_equal(full.best_b, tiny.best_b)
    assert np.array_equal(full.best_b, full.dense.argmax(axis=0))


def test_errors_are_one_line(planted, tmp_path):
    run_a, _, _, _ = planted
    wide = write_sparsify(tmp_path / "cw", d_in=32, n_latents=48, k=4, seed=0)
    tok, dense = random_cache(tmp_path / "z", n_latents=48, seed=9)
    run_c = run_from(tmp_path / "c", tok, dense, wide.folder)
    with pytest.raises(ValueError, match="share no space.*different tokens"):
        compare_runs(run_a, run_c, config=CompareConfig(embedding_model="tfidf"))
    with pytest.raises(ValueError, match="decoder widths differ"):
        compare_runs(run_a, run_c, config=CompareConfig(by="decoder", embedding_model="tfidf"))
    result = CliRunner().invoke(app, ["compare", str(run_a), str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no cached hookpoint" in result.output


def test_a_missing_embedding_model_fails_before_the_coders_load(planted, tmp_path, monkeypatch):
    import autointerp.compare.run as compare_run

    run_a, run_b, _, _ = planted
    loads: list[object] = []
    monkeypatch.setattr(compare_run, "load_decoder", lambda cache: loads.append(cache))
    (tmp_path / "not_a_model").mkdir()
    cfg = CompareConfig(embedding_model=str(tmp_path / "not_a_model"))
    with pytest.raises(ValueError, match="not a sentence-transformers model folder"):
        compare_runs(run_a, run_b, out_dir=tmp_path / "out", config=cfg)
    assert loads == []  # no coder was loaded, no token file hashed
