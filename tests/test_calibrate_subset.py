"""`calibrate --latents`: a subset of the planted latents for a slow judge."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from autointerp.calibrate import calibrate
from autointerp.cli import app
from autointerp.config import load_config


@pytest.mark.parametrize("spec", ["3,40", "5"])
def test_bad_subsets_fail_in_one_line_before_any_work(tmp_path: Path, spec: str) -> None:
    result = CliRunner().invoke(
        app, ["calibrate", "--run-dir", str(tmp_path / "cal"), "--latents", spec]
    )
    assert result.exit_code == 2 and "at least 2 of the planted latents 0..15" in result.output
    assert not (tmp_path / "cal").exists()


@pytest.mark.slow
def test_a_subset_scores_only_its_latents(tmp_path: Path) -> None:
    cfg = load_config(None, {"run_dir": str(tmp_path), "cache.hookpoints": ["model.layers.0"]})
    table = calibrate(
        cfg, tmp_path, ["detection"], n_tokens=16_384, progress=False, latents=[0, 1, 2]
    )
    scores = pl.read_parquet(tmp_path / "scores" / "detection.parquet")
    assert sorted(set(scores["latent"])) == [0, 1, 2] and scores.height == 6
    assert set(scores["explainer"]) == {"planted:true", "planted:shuffled"}
    assert (table["n_true"] + table["n_shuffled"] <= 6).all()
