"""A run directory works from any current directory: local paths given relative to the
directory a command started from are stored absolute (run.yaml, meta.json); an older run's
paths relative to the run directory still resolve; a model found nowhere is a one-line error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from autointerp.cli import app

ROOT = Path(__file__).parents[1]
MODEL = "autointerp/assets/demo/lm"
CODER = "autointerp/assets/demo/sae"


def _invoke(args: list[str]) -> object:
    return CliRunner().invoke(app, args)


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("paths") / "run"
    here = Path.cwd()
    os.chdir(ROOT)  # paths relative to the repository root, as a user would type them
    try:
        args = ["cache", "--model", MODEL, "--sae", CODER, "--run-dir", str(run)]
        args += ["--n-tokens", "2048", "--ctx-len", "32", "--device", "cpu", "--no-progress"]
        result = _invoke(args)
        assert result.exit_code == 0, result.output
        result = _invoke(["sample", str(run)])
        assert result.exit_code == 0, result.output
    finally:
        os.chdir(here)
    return run


def _meta(run: Path) -> Path:
    return next((run / "cache").glob("*/meta.json"))


def test_relative_paths_are_stored_absolute(cached: Path, tmp_path: Path) -> None:
    saved = yaml.safe_load((cached / "run.yaml").read_text())
    assert saved["subject"]["model"] == str(ROOT / MODEL)
    assert saved["coder"]["path"] == str(ROOT / CODER)
    assert json.loads(_meta(cached).read_text())["model"] == str(ROOT / MODEL)


def test_explain_works_from_another_directory(
    cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = _invoke(["explain", str(cached), "--latents", "0:4", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (cached / "explanations.parquet").is_file()


def test_paths_relative_to_the_run_dir_resolve_and_a_missing_model_is_one_line(
    cached: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta = _meta(cached)
    original = meta.read_text()
    monkeypatch.chdir(tmp_path)
    try:
        data = json.loads(original)
        data["model"] = os.path.relpath(ROOT / MODEL, cached)  # relative to the run dir
        meta.write_text(json.dumps(data))
        result = _invoke(["explain", str(cached), "--latents", "4:6", "--no-progress"])
        assert result.exit_code == 0, result.output
        data["model"] = MODEL  # relative to a directory this command did not start from
        meta.write_text(json.dumps(data))
        result = _invoke(["explain", str(cached), "--latents", "6:8", "--no-progress"])
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: subject model"), result.output
        assert "subject.model" in lines[0] and "Traceback" not in result.output
    finally:
        meta.write_text(original)
