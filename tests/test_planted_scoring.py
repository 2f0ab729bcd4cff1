"""Proof that the scorers measure something: on the planted coder (latents with known true
explanations), each latent's true explanation must beat another latent's. Token latents with
the offline lexical judge; context latents with a scripted judge (over the fake server) that
can read context. Also: the token-list baseline recovers the planted tokens."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fake_server import FakeServer
from llm_helpers import SECRET
from scripted_judge import ScriptedJudge

from autointerp.calibrate import calibrate
from autointerp.coders.planted import DEFAULT_RULES, Rule, string_literal_mask
from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.llm.lexical import quoted_tokens
from autointerp.text import highlighted_spans

SCORERS = ["detection", "fuzzing", "simulation"]
N_TOKENS = 65_536


@pytest.fixture(scope="module")
def lexical_calibration(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pl.DataFrame]:
    run = tmp_path_factory.mktemp("planted")
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


# -- context latents: a scripted judge that reads context ------------------------------------
def _rule_of(explanation: str) -> Rule | None:
    return next((r for r in DEFAULT_RULES if r.explanation == explanation), None)


def _char_mask(rule: Rule, text: str) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    if rule.kind == "string_literal":
        return string_literal_mask(text)
    if rule.kind == "regex":
        for m in re.finditer(rule.pattern, text):
            mask[m.start() : m.end()] = True
    elif rule.kind == "after":
        words = "|".join(map(re.escape, rule.tokens))
        for m in re.finditer(rf"\b(?:{words})\s+(\w)", text):
            mask[m.start(1)] = True
    else:
        words = "|".join(map(re.escape, rule.tokens))
        for m in re.finditer(rf"(?<![\w=!])(?:{words})(?![\w=])", text):
            mask[m.start() : m.end()] = True
    return mask


def context_judge() -> ScriptedJudge:
    def detect(explanation: str, text: str) -> bool:
        rule = _rule_of(explanation)
        return bool(rule and _char_mask(rule, text).any())

    def fuzz(explanation: str, marked: list[str], shown: str) -> bool:
        rule = _rule_of(explanation)
        plain, spans = highlighted_spans(shown)
        if not rule or not spans:
            return False
        mask = _char_mask(rule, plain)
        return all(mask[a:b].any() for a, b in spans)

    def simulate(explanation: str, tokens: list[str]) -> list[int]:
        rule = _rule_of(explanation)
        text = "".join(tokens)
        mask = _char_mask(rule, text) if rule else np.zeros(len(text), bool)
        out, pos = [], 0
        for t in tokens:
            out.append(10 if mask[pos : pos + len(t)].any() else 0)
            pos += len(t)
        return out

    return ScriptedJudge(detect=detect, fuzz=fuzz, simulate=simulate)


def test_scripted_context_judge_separates_context_latents(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    server = FakeServer(responder=context_judge()).start()
    try:
        cfg = load_config(
            None,
            {
                "run_dir": str(tmp_path),
                "cache.hookpoints": ["model.layers.0"],
                "llm.model": "openai:judge",
                "llm.base_url": server.base_url,
                "llm.api_key_env": "FAKE_LLM_KEY",
                "llm.concurrency": 16,
            },
        )
        table = calibrate(cfg, tmp_path, SCORERS, n_tokens=N_TOKENS, progress=False)
    finally:
        server.stop()
    ctx = table.filter(pl.col("latents") == "context")
    for scorer, metric in [("detection", "auroc"), ("fuzzing", "auroc"), ("simulation", "pearson")]:
        row = ctx.filter((pl.col("scorer") == scorer) & (pl.col("metric") == metric)).row(
            0, named=True
        )
        assert row["auroc"] >= 0.95, (scorer, row)
