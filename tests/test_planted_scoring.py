"""Proof that the scorers measure something: on the planted coder (latents with known true
explanations), each latent's true explanation must beat another latent's. Token latents with
the offline lexical judge; every latent with a judge over the fake server that reads only the
prompt text and decides from the explanation's words. Also: the token-list baseline recovers
the planted tokens."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fake_server import FakeServer
from llm_helpers import SECRET
from scripted_judge import reading_judge, stated_mask

from autointerp.calibrate import calibrate
from autointerp.coders.planted import DEFAULT_RULES
from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.llm.lexical import quoted_tokens

SCORERS = ["detection", "fuzzing", "simulation"]
N_TOKENS = 65_536
MIN_AUROC = {"token": 0.95, "context": 0.9}
# A folder that keeps the planted cache and examples between pytest sessions (the mutation
# check sets it: scores, explanations and responses are removed before each use, so every
# session scores afresh; only the cache and the sampled windows are reused).
KEEP = os.environ.get("AUTOINTERP_TEST_PLANTED_DIR")
REUSED = {"cache", "examples", "planted-coder", "run.yaml"}


@pytest.fixture(scope="module")
def planted_dir(tmp_path_factory: pytest.TempPathFactory):
    def make(name: str) -> Path:
        if not KEEP:
            return tmp_path_factory.mktemp(name)
        run = Path(KEEP) / name
        run.mkdir(parents=True, exist_ok=True)
        for p in run.iterdir():
            if p.name not in REUSED:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        return run

    return make


@pytest.fixture(scope="module")
def lexical_calibration(planted_dir) -> tuple[Path, pl.DataFrame]:
    run = planted_dir("planted")
    cfg = load_config(None, {"run_dir": str(run), "cache.hookpoints": ["model.layers.0"]})
    table = calibrate(cfg, run, SCORERS, n_tokens=N_TOKENS, progress=False)
    return run, table


def test_lexical_judge_separates_true_token_explanations(lexical_calibration) -> None:
    run, table = lexical_calibration
    assert (run / "calibration.parquet").is_file()
    for scorer, metric in [("detection", "auroc"), ("fuzzing", "auroc"), ("simulation", "pearson")]:
        row = table.filter(
            (pl.col("scorer") == scorer)
            & (pl.col("metric") == metric)
            & (pl.col("latents") == "token")
        ).row(0, named=True)
        assert row["auroc"] >= 0.95, (scorer, row)
        assert row["mean_true"] > row["mean_shuffled"] + 0.3, (scorer, row)
    # context latents are scored and reported too (a lexical judge cannot see context)
    assert set(table["latents"]) == {"token", "context", "all"}


def test_every_token_latent_beats_its_shuffled_explanation(lexical_calibration) -> None:
    run, _ = lexical_calibration
    token_latents = [i for i, r in enumerate(DEFAULT_RULES) if r.kind == "tokens"]
    for scorer, metric in [("detection", "balanced_accuracy"), ("simulation", "pearson")]:
        df = pl.read_parquet(run / "scores" / f"{scorer}.parquet")
        for latent in token_latents:
            rows = df.filter(pl.col("latent") == latent)
            true = rows.filter(pl.col("explainer") == "planted:true")[metric][0]
            other = rows.filter(pl.col("explainer") == "planted:shuffled")[metric][0]
            assert true > np.nan_to_num(other), (scorer, latent, true, other)


def test_token_list_baseline_recovers_planted_tokens(lexical_calibration, tmp_path) -> None:
    src, _ = lexical_calibration
    run = tmp_path / "run"
    shutil.copytree(src, run)
    cfg = load_config(run / "run.yaml", {"explain.explainer": "token-list"})
    expl = pl.read_parquet(explain(run, cfg, progress=False))
    hits = 0
    token_rules = [(i, r) for i, r in enumerate(DEFAULT_RULES) if r.kind == "tokens"]
    for latent, rule in token_rules:
        text = expl.filter(pl.col("latent") == latent)["explanation"][0]
        listed = [t.strip() for t in quoted_tokens(text)]
        hits += listed[0] in rule.tokens  # the most distinctive token is a planted one
    assert hits == len(token_rules)


# -- every latent, judged over HTTP by a judge that reads only the prompt text -----------------
def test_reading_judge_separates_token_and_context_latents(
    planted_dir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The judge (tests/scripted_judge.py: reading_judge) sees what a model sees, the prompt
    text, and decides from the explanation's words; it never imports the planted generator.
    Each latent's true explanation must beat its shuffled one for token AND context latents."""
    run = planted_dir("reading")
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    judge = reading_judge()
    server = FakeServer(responder=judge).start()
    try:
        cfg = load_config(
            None,
            {
                "run_dir": str(run),
                "cache.hookpoints": ["model.layers.0"],
                "llm.model": "openai:judge",
                "llm.base_url": server.base_url,
                "llm.api_key_env": "FAKE_LLM_KEY",
                "llm.concurrency": 16,
            },
        )
        table = calibrate(cfg, run, SCORERS, n_tokens=N_TOKENS, progress=False)
    finally:
        server.stop()
    asked = {task for task, _ in judge.seen}
    assert asked == {"detection", "fuzzing", "simulation"}, asked
    for group in ("token", "context"):
        rows = table.filter(pl.col("latents") == group)
        for scorer, metric in [
            ("detection", "auroc"),
            ("fuzzing", "auroc"),
            ("simulation", "pearson"),
        ]:
            row = rows.filter((pl.col("scorer") == scorer) & (pl.col("metric") == metric)).row(
                0, named=True
            )
            assert row["auroc"] >= MIN_AUROC[group], (group, scorer, row)
            assert row["mean_true"] > row["mean_shuffled"] + 0.25, (group, scorer, row)
    for scorer, metric in [("detection", "balanced_accuracy"), ("simulation", "pearson")]:
        df = pl.read_parquet(run / "scores" / f"{scorer}.parquet")
        for latent in range(len(DEFAULT_RULES)):
            rows = df.filter(pl.col("latent") == latent)
            true = rows.filter(pl.col("explainer") == "planted:true")[metric][0]
            other = rows.filter(pl.col("explainer") == "planted:shuffled")[metric][0]
            assert true > np.nan_to_num(other), (scorer, latent, true, other)


def test_the_reading_judge_never_reads_the_generator() -> None:
    """Its module imports nothing of the planted coder (the rule it applies comes from the
    explanation's words), and it answers paraphrases the generator never wrote."""
    import scripted_judge

    source = Path(scripted_judge.__file__).read_text()
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert not any("coders" in ln or "planted" in ln for ln in imports), imports
    code = 'x = 1  # note\nname = "abc"\ndef run(n):\n    return n == 42\n'
    marks = {
        'lines\' comments, from "#" on': "# note",
        "any number": "142",
        "characters inside a string literal": "abc",
        'whatever name follows "def"': "run",
        'the operator "=="': "==",
    }
    for explanation, expected in marks.items():
        mask = stated_mask(explanation, code)
        assert "".join(c for c, m in zip(code, mask, strict=True) if m) == expected, explanation
