"""Random-baseline controls: a coder of the demo SAE's shape and format with random weights
runs the same pipeline beside the run; the summary shows each score against its control."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from autointerp.cache import cache_activations
from autointerp.cli import app
from autointerp.config import DEMO_CODER, load_config
from autointerp.controls import control_dir, randomize_weights, run_control
from autointerp.explainers.run import explain
from autointerp.sampling.build import build_examples
from autointerp.scorers.run import score
from autointerp.scorers.summary import COLUMNS, format_summary, summarize

HP = "model.layers.1"
LATENTS = list(range(0, 40))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("control") / "run"
    cfg = load_config(
        None,
        {
            "run_dir": str(run),
            "cache.n_tokens": 16_384,
            "score.control_latents": 6,
            "score.n_boot": 100,
        },
    )
    cache_activations(cfg, progress=False)
    build_examples(run, cfg, latents=LATENTS, progress=False)
    explain(run, cfg, latents=LATENTS, progress=False)
    score(run, cfg, scorers=["detection", "fuzzing"], progress=False)
    return run


def test_random_coder_has_the_demo_sae_format_and_shape(tmp_path: Path) -> None:
    src = Path(DEMO_CODER) / HP
    names = randomize_weights(src, tmp_path / "a", seed=0)
    assert names == ["sae.safetensors"]
    randomize_weights(src, tmp_path / "b", seed=0)
    assert json.loads((tmp_path / "a" / "cfg.json").read_text()) == json.loads(
        (src / "cfg.json").read_text()
    )  # k and the rest kept
    real, fake = load_file(src / "sae.safetensors"), load_file(tmp_path / "a" / "sae.safetensors")
    again = load_file(tmp_path / "b" / "sae.safetensors")
    assert sorted(real) == sorted(fake)
    for k in real:
        assert fake[k].shape == real[k].shape and fake[k].dtype == real[k].dtype
        assert torch.equal(fake[k], again[k])  # seeded
        if real[k].numel() > 1 and float(real[k].float().std()) > 0:
            assert not torch.equal(fake[k], real[k])
            assert abs(float(fake[k].float().std() / real[k].float().std()) - 1) < 0.1


def test_control_scores_beside_the_real_ones(demo_run: Path) -> None:
    cfg = load_config(demo_run / "run.yaml")
    paths = run_control(demo_run, cfg, "random-coder", scorers=["detection"], progress=False)
    out = control_dir(demo_run, "random-coder")
    assert paths == {"detection": out / "scores" / "detection.parquet"}
    assert (out / "coder" / HP / "sae.safetensors").is_file()
    meta = json.loads((out / "cache" / HP / "meta.json").read_text())
    assert str(out / "coder") in json.dumps(meta)  # cached through the random coder
    det = pl.read_parquet(paths["detection"])
    real = pl.read_parquet(demo_run / "explanations.parquet")
    assert det.height == 6 and set(det["latent"]) <= set(real["latent"])
    assert not (out / "scores" / "fuzzing.parquet").exists()
    summary = summarize(demo_run)
    assert list(summary.columns) == COLUMNS
    row = summary.filter((pl.col("scorer") == "detection") & (pl.col("metric") == "auroc"))
    assert row.height == 1 and row["control"][0] == "random-coder"
    assert row["scored"][0] > 0 and row["control_scored"][0] >= 1
    ctrl = summarize(out).filter((pl.col("scorer") == "detection") & (pl.col("metric") == "auroc"))
    assert row["control_mean"][0] == ctrl["mean"][0] and row["mean"][0] != row["control_mean"][0]
    fuzz = summary.filter(pl.col("scorer") == "fuzzing")
    assert fuzz.height > 0 and fuzz["control"].is_null().all()  # no fuzzing control
    lines = format_summary(summary)
    assert "control: mean [95% CI]" in lines[0]
    assert any("random-coder: " in line and line.startswith("detection") for line in lines)


def test_cli_rejects_an_unknown_control(demo_run: Path) -> None:
    result = CliRunner().invoke(app, ["score", str(demo_run), "--control", "random-sae"])
    assert result.exit_code == 2
    assert "unknown --control 'random-sae'" in result.output


def test_random_model_reinitialises_the_subject(tmp_path: Path) -> None:
    from autointerp.controls import random_model
    from autointerp.subject.model import load_subject

    cfg = load_config(None, {"run_dir": str(tmp_path), "subject.device": "cpu"})
    dst = random_model(cfg, tmp_path / "model")
    assert (dst / "tokenizer.json").is_file() or (dst / "tokenizer_config.json").is_file()
    real, _ = load_subject(cfg.subject)
    fake, _ = load_subject(cfg.subject.model_copy(update={"model": str(dst)}))
    a, b = real.state_dict(), fake.state_dict()
    assert sorted(a) == sorted(b) and all(a[k].shape == b[k].shape for k in a)
    assert not any(torch.equal(a[k], b[k]) for k in a if a[k].float().std() > 0)


def test_control_of_an_unexplained_hookpoint_fails_before_any_work(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    pl.DataFrame({"hookpoint": ["model.layers.0"], "latent": [3]}).write_parquet(
        run / "explanations.parquet"
    )
    cfg = load_config(None, {"run_dir": str(run), "cache.hookpoints": [HP]})
    with pytest.raises(ValueError, match=f"no latent of {HP}: explain that hookpoint"):
        run_control(run, cfg, "random-coder", progress=False)
    assert not control_dir(run, "random-coder").exists()  # no coder written, nothing cached
