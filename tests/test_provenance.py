"""Provenance on every number: stages record what they ran with (stages/<stage>.json, run.yaml),
a plain `score` keeps the explain stage's model and says which judge it uses, score rows carry
judge and explanation set, and the summary never mixes explanation sets or judges."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml
from click.testing import CliRunner
from fake_server import FakeServer
from llm_helpers import SECRET
from scripted_judge import ScriptedJudge
from stage_helpers import copy_run, served, synthetic_run
from typer.main import get_group

from autointerp.cli import app
from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.scorers.run import score
from autointerp.scorers.summary import COLUMNS, format_summary, summarize

N_LAT = 12
LATENTS = list(range(2, 8))


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("prov"), N_LAT)


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    return copy_run(base_run, tmp_path)


@pytest.fixture
def judge_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    srv = FakeServer(responder=ScriptedJudge(explain=lambda user: 'the token "q"')).start()
    yield srv
    srv.stop()


def _files(run: Path) -> str:
    parts = [(run / "run.yaml").read_text()]
    parts += [p.read_text() for p in sorted((run / "stages").glob("*.json"))]
    return "\n".join(parts)


def test_two_explanation_sets_of_one_explainer_are_never_mixed(
    run: Path, judge_server: FakeServer
) -> None:
    explain(run, served(run, judge_server), latents=LATENTS, progress=False)
    lexical = load_config(None, {"run_dir": str(run)})
    explain(run, lexical, latents=LATENTS, progress=False)
    expl = pl.read_parquet(run / "explanations.parquet")
    assert set(expl["explainer"]) == {"default"} and expl["explanation_set"].n_unique() == 2
    score(run, lexical, scorers=["detection"], progress=False)
    det = pl.read_parquet(run / "scores" / "detection.parquet")
    summary = summarize(run).filter(pl.col("metric") == "balanced_accuracy")
    assert summary.height == 2 and set(summary["explanation_set"]) == set(expl["explanation_set"])
    for row in summary.iter_rows(named=True):
        mine = expl.filter(pl.col("explanation_set") == row["explanation_set"])
        rows = det.filter(pl.col("explanation_set") == row["explanation_set"])
        # every latent of the set scored with the set's own text, and only those
        assert rows.height == len(LATENTS) == row["scored"] == row["n"]
        got = dict(zip(rows["latent"], rows["explanation_id"], strict=True))
        assert got == dict(zip(mine["latent"], mine["explanation_id"], strict=True))
        assert row["mean"] == pytest.approx(rows["balanced_accuracy"].mean())
    llm_set = expl.filter(pl.col("explanation") == 'the token "q"')["explanation_set"][0]
    means = dict(zip(summary["explanation_set"], summary["mean"], strict=True))
    assert means[llm_set] == pytest.approx(0.5)  # "q" is no latent's token: chance, alone


def test_plain_score_keeps_the_explain_model_and_says_so(
    run: Path, judge_server: FakeServer
) -> None:
    cli = get_group(app)
    args = ["explain", str(run), "--latents", "2:5", "--no-progress"]
    args += ["--llm", "openai:gpt-4o-mini", "--base-url", judge_server.base_url]
    (run / "run.yaml").write_text(yaml.safe_dump({"llm": {"api_key_env": "FAKE_LLM_KEY"}}))
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((run / "run.yaml").read_text())
    assert saved["llm"]["model"] == "openai:gpt-4o-mini"
    assert saved["llm"]["base_url"] == judge_server.base_url
    stage = json.loads((run / "stages" / "explain.json").read_text())
    assert stage["llm"] == {
        "model": "openai:gpt-4o-mini",
        "backend": "openai",
        "model_name": "gpt-4o-mini",
        "endpoint": judge_server.base_url,
    }
    expl = pl.read_parquet(run / "explanations.parquet")
    assert stage["explanation_set"] == expl["explanation_set"][0]
    hits = judge_server.hits
    result = CliRunner().invoke(cli, ["score", str(run), "--scorers", "detection", "--no-progress"])
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first == f"judge: openai:gpt-4o-mini at {judge_server.base_url} (from run.yaml)"
    assert judge_server.hits > hits  # judged by the explain stage's model, not the baseline
    det = pl.read_parquet(run / "scores" / "detection.parquet")
    assert set(det["model"]) == {"openai:gpt-4o-mini"}
    assert set(det["judge_endpoint"]) == {judge_server.base_url}
    assert set(det["explanation_set"]) == set(expl["explanation_set"])
    scored = json.loads((run / "stages" / "score.json").read_text())
    assert scored["scorers"]["detection"]["judge"] == "openai:gpt-4o-mini"
    assert scored["scorers"]["detection"]["judge_endpoint"] == judge_server.base_url
    assert scored["explanation_sets"] == sorted(set(expl["explanation_set"]))
    header = [ln for ln in result.output.splitlines() if ln.startswith("scorer")][0]
    assert "judge" in header.split()
    assert any("openai:gpt-4o-mini" in ln for ln in result.output.splitlines()[2:])
    assert SECRET not in _files(run)
    # an explicit --llm wins, and the line says where the judge came from
    args = ["score", str(run), "--scorers", "detection", "--llm", "lexical", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.output.splitlines()[0] == (
        "judge: lexical (from --llm), the offline lexical baseline; "
        "the last explain stage used openai:gpt-4o-mini"
    )
    summary = summarize(run).filter(pl.col("metric") == "auroc")
    assert sorted(summary["judge"]) == ["lexical", "openai:gpt-4o-mini"]  # two groups


def _scores(latents: range, config: str, values: list[float], **extra: object) -> pl.DataFrame:
    n = len(values)
    return pl.DataFrame(
        {
            "hookpoint": ["h"] * n,
            "latent": list(latents)[:n],
            "explanation_id": [f"e{i}" for i in range(n)],
            "explanation_set": ["xset"] * n,
            "config_hash": [config + "-examples"] * n,
            "scorer": ["detection"] * n,
            "explainer": ["default"] * n,
            "status": ["ok"] * n,
            "model": ["lexical"] * n,
            "judge_endpoint": pl.Series([None] * n, dtype=pl.String),
            "scorer_config": [config] * n,
            "n_lost": [0] * n,
            "balanced_accuracy": values,
            "balanced_accuracy_chance": [0.5] * n,
            **{k: [v] * n for k, v in extra.items()},
        }
    )


def test_controls_join_on_the_same_scorer_config_and_means_say_n(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "scores").mkdir(parents=True)
    _scores(range(4), "cfgA", [0.9, 0.8, float("nan"), 0.7]).write_parquet(
        run / "scores" / "detection.parquet"
    )
    ctrl = run / "controls" / "random-coder" / "scores"
    ctrl.mkdir(parents=True)
    other = _scores(range(10, 16), "cfgB", [0.1] * 6)  # another config, first and bigger
    same = _scores(range(3), "cfgA", [0.6, 0.5, 0.4])
    pl.concat([other, same]).write_parquet(ctrl / "detection.parquet")
    s = summarize(run, ["detection"]).filter(pl.col("metric") == "balanced_accuracy")
    assert list(s.columns) == COLUMNS and s.height == 1
    row = s.row(0, named=True)
    assert row["mean"] == pytest.approx(0.8) and row["n"] == 3 and row["scored"] == 4
    assert row["control_mean"] == pytest.approx(0.5) and row["control_n"] == 3
    assert row["control"] == "random-coder" and row["scorer_config"] == "cfgA"
    line = format_summary(s)[1]
    assert "    3 " in line and "random-coder: 0.500" in line and "(3)" in line
    assert math.isfinite(row["ci_lo"]) and np.isfinite(row["chance"])


def test_constant_simulation_scores_zero_flagged_and_counts_in_the_mean(
    run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    judge = ScriptedJudge(simulate=lambda explanation, tokens: [3] * len(tokens))
    srv = FakeServer(responder=judge).start()
    try:
        cfg = served(run, srv)
        explain(run, cfg, latents=LATENTS, progress=False)
        score(run, cfg, scorers=["simulation"], progress=False)
    finally:
        srv.stop()
    sim = pl.read_parquet(run / "scores" / "simulation.parquet")
    assert (sim["status"] == "ok").all() and sim.height == len(LATENTS)
    assert (sim["pearson"] == 0.0).all() and (sim["constant_prediction"] == 1.0).all()
    row = summarize(run).filter(pl.col("metric") == "pearson").row(0, named=True)
    assert row["n"] == row["scored"] == len(LATENTS) and row["mean"] == 0.0


def test_an_always_yes_judge_on_an_all_positive_mix_is_not_scorable(
    run: Path, judge_server: FakeServer
) -> None:
    path = run / "examples" / "model.layers.1.parquet"
    ex = pl.read_parquet(path)
    # latent 4 keeps only activating test windows: a one-class mix
    keep = ~(
        (pl.col("latent") == 4) & (pl.col("split") == "test") & (pl.col("kind") != "activating")
    )
    ex.filter(keep).write_parquet(path)
    judge_server.responder.detect = lambda explanation, text: True  # type: ignore[attr-defined]
    cfg = served(run, judge_server)
    explain(run, cfg, latents=[3, 4], progress=False)
    score(run, cfg, scorers=["detection"], progress=False)
    det = pl.read_parquet(run / "scores" / "detection.parquet")
    one = det.filter(pl.col("latent") == 4).row(0, named=True)
    assert one["status"] == "skipped" and "one class" in one["error"]
    assert math.isnan(one["balanced_accuracy"])
    mixed = det.filter(pl.col("latent") == 3).row(0, named=True)
    assert mixed["status"] == "ok" and mixed["balanced_accuracy"] == pytest.approx(0.5)
    row = summarize(run).filter(pl.col("metric") == "balanced_accuracy").row(0, named=True)
    assert row["scored"] == 1 and row["skipped"] == 1 and row["n"] == 1
    assert row["mean"] == pytest.approx(0.5)
