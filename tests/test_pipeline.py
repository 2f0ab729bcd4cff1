"""`autointerp run` and the shipped configs: every config validates; one command runs every
stage; a rerun repeats nothing; bad stage names and overrides are one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.cli.common import parse_sets
from autointerp.coders.planted import DEFAULT_RULES, write_planted_coder
from autointerp.config import load_config
from autointerp.pipeline import check_stages, demo_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_every_shipped_config_validates() -> None:
    assert {p.name for p in CONFIGS} >= {"demo.yaml", "pythia-vllm.yaml", "pythia-openai.yaml"}
    for path in CONFIGS:
        cfg = load_config(path)
        assert cfg.run_dir.parts[0] == "results", path
        assert "api_key" not in path.read_text().replace("api_key_env", ""), path


def test_demo_yaml_is_what_demo_runs() -> None:
    shipped = load_config(Path(__file__).parents[1] / "configs" / "demo.yaml")
    assert shipped == load_config(None, demo_config("results/demo"))


def test_set_overrides_parse_yaml_values() -> None:
    got = parse_sets(["llm.concurrency=64", "score.scorers=[detection, fuzzing]", "seed=3"])
    assert got == {"llm.concurrency": 64, "score.scorers": ["detection", "fuzzing"], "seed": 3}
    assert check_stages(["score", "cache"]) == ["cache", "score"]
    with pytest.raises(ValueError, match="unknown stage"):
        check_stages(["explian"])


def test_run_command_runs_every_stage_and_resumes(tmp_path: Path) -> None:
    coder = write_planted_coder(tmp_path / "coder", DEFAULT_RULES)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "coder": {"path": str(coder)},
                "cache": {"hookpoints": ["model.layers.0"], "n_tokens": 16384},
                "score": {"scorers": ["detection", "fuzzing"]},
            }
        )
    )
    runner = CliRunner()
    args = ["run", str(config), "--stages", "cache,sample,explain,score", "--no-progress"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    for f in [
        "run.yaml",
        "explanations.parquet",
        "scores/detection.parquet",
        "scores/fuzzing.parquet",
        "examples/model.layers.0.parquet",
    ]:
        assert (run / f).is_file(), f
    assert "detection" in result.output and "balanced_accuracy" in result.output
    expl = pl.read_parquet(run / "explanations.parquet")
    assert expl.height == len(DEFAULT_RULES)
    before = {p.name: p.stat().st_mtime_ns for p in (run / "scores").glob("*.parquet")}
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    after = {p.name: p.stat().st_mtime_ns for p in (run / "scores").glob("*.parquet")}
    assert after == before  # nothing rescored, nothing rewritten
    assert pl.read_parquet(run / "explanations.parquet").height == len(DEFAULT_RULES)


def test_a_run_with_a_report_writes_the_score_stages_audit(tmp_path: Path) -> None:
    # the pipeline leaves the score stage's shortcut audit to the report (another process,
    # beside the detail files): the same files, with the run's seed, as the score stage's own
    coder = write_planted_coder(tmp_path / "coder", DEFAULT_RULES)
    config = tmp_path / "run.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run_dir": str(tmp_path / "run"),
                "seed": 7,
                "coder": {"path": str(coder)},
                "cache": {"hookpoints": ["model.layers.0"], "n_tokens": 16384},
                "score": {"scorers": ["detection", "fuzzing"]},
            }
        )
    )
    runner = CliRunner()
    result = runner.invoke(app, ["run", str(config), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert "Shortcut audit" in (run / "report" / "index.html").read_text()
    written = {}
    for name in ("detection", "fuzzing"):
        path = run / "scores" / f"{name}.audit.parquet"
        written[name] = pl.read_parquet(path)
        assert written[name].height > 0
        path.unlink()
    again = runner.invoke(app, ["score", str(run), "--no-progress"])  # audits what is missing
    assert again.exit_code == 0, again.output
    for name, frame in written.items():
        assert pl.read_parquet(run / "scores" / f"{name}.audit.parquet").equals(frame)
    # an audit older than its examples file (a run killed before its report wrote it) is
    # written again by a score call that scores nothing; a fresh one is left as it is
    examples = run / "scores" / "fuzzing.examples.parquet"
    stale = run / "scores" / "fuzzing.audit.parquet"
    fresh = run / "scores" / "detection.audit.parquet"
    os.utime(stale, ns=(1, 1))
    kept = fresh.stat().st_mtime_ns
    assert runner.invoke(app, ["score", str(run), "--no-progress"]).exit_code == 0
    assert stale.stat().st_mtime_ns >= examples.stat().st_mtime_ns
    assert pl.read_parquet(stale).equals(written["fuzzing"])
    assert fresh.stat().st_mtime_ns == kept


def test_run_command_bad_input_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"run_dir": str(tmp_path / "r")}))
    runner = CliRunner()
    bad_stage = runner.invoke(app, ["run", str(config), "--stages", "cache,explian"])
    assert bad_stage.exit_code == 2 and "unknown stage" in bad_stage.output
    bad_set = runner.invoke(app, ["run", str(config), "-s", "cache.n_tokens=-5"])
    assert bad_set.exit_code == 2 and "n_tokens" in bad_set.output
    assert not (tmp_path / "r" / "run.yaml").exists()  # nothing written before validation


def test_demo_with_a_real_llm_defaults_to_a_few_latents() -> None:
    from autointerp.cli.demo import REAL_LLM_LATENTS, demo_latents
    from autointerp.sampling.latents import parse_latents

    assert demo_latents(None, None) is None  # lexical baseline: every latent
    assert demo_latents(None, "lexical") is None
    assert demo_latents(None, "vllm:qwen2.5-coder-1.5b-instruct") == REAL_LLM_LATENTS
    assert 1 <= len(parse_latents(REAL_LLM_LATENTS)) <= 8  # a handful
    assert demo_latents("7,9", "vllm:qwen2.5-coder-1.5b-instruct") == "7,9"  # given: kept
