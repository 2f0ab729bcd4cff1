"""The iterative explainer: revises from the judge's mistakes on held-back train windows, never
reads selection or test windows while revising, keeps the round best on selection."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from fake_server import FakeServer
from llm_helpers import SECRET
from scripted_judge import ScriptedJudge, default_explain
from stage_helpers import copy_run, synthetic_run
from stage_helpers import served as served_config

from autointerp.config import RunConfig, load_config
from autointerp.explainers.base import SCHEMA
from autointerp.explainers.run import explain
from autointerp.scorers.run import score
from autointerp.text import vocab_for

N_LAT = 12
LATENTS = [4, 5, 6, 7, 9, 10]  # tokens "#" .. ")": no double quote
WRONG = 'the token "zzqqxx"'
TOKEN = {4: "#", 5: "$", 6: "%", 7: "&", 9: "(", 10: ")"}  # latent l fires on token l % 50


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("iter"), N_LAT)


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    return copy_run(base_run, tmp_path)


def served(run: Path, server: FakeServer, **overrides: object) -> RunConfig:
    base = {"llm.max_attempts": 1, "explain.explainer": "iterative"}
    return served_config(run, server, **{**base, **overrides})


def wrong_first(user: str) -> str:
    """A scripted explainer: a wrong explanation until it is shown what it missed."""
    return default_explain(user) if user.startswith("Your previous explanation") else WRONG


def activating(run: Path) -> dict[str, set[str]]:
    """Each latent's right explanation -> the texts of its activating windows (any split)."""
    vocab = vocab_for(load_config(None, {}).subject.model)
    ex = pl.read_parquet(run / "examples" / "model.layers.1.parquet")
    out = {}
    for lat in LATENTS:
        sub = ex.filter((pl.col("kind") == "activating") & (pl.col("latent") == lat))
        out[f'the token "{TOKEN[lat]}"'] = {vocab.text(t).strip() for t in sub["tokens"]}
    return out


@pytest.fixture
def judge(run: Path, monkeypatch: pytest.MonkeyPatch):
    """Explainer: wrong until shown its misses. Judge: with the right explanation it tells
    the latent's activating windows from the rest; with the wrong one it picks nothing."""
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    active = activating(run)
    scripted = ScriptedJudge(
        explain=wrong_first, detect=lambda e, text: text.strip() in active.get(e, ())
    )
    srv = FakeServer(responder=scripted).start()
    yield srv, scripted
    srv.stop()


def texts(run: Path, split: str) -> list[str]:
    vocab = vocab_for(load_config(None, {}).subject.model)
    ex = pl.read_parquet(run / "examples" / "model.layers.1.parquet")
    sub = ex.filter((pl.col("split") == split) & pl.col("latent").is_in(LATENTS))
    return [vocab.text(t) for t in sub["tokens"].to_list()]


def test_keeps_the_better_round_and_never_revises_on_selection_or_test(run: Path, judge) -> None:
    server, scripted = judge
    cfg = served(run, server, **{"explain.iter_rounds": 3})
    expl = pl.read_parquet(explain(run, cfg, latents=LATENTS, progress=False))
    assert list(expl.columns) == list(SCHEMA)
    for lat in LATENTS:
        rows = expl.filter(pl.col("latent") == lat).sort("round")
        # round 0 wrong; round 1 right and perfect on the held-back windows: no round 2
        assert rows["round"].to_list() == rows["candidate"].to_list() == [0, 1]
        assert rows["explanation"].to_list() == [WRONG, f'the token "{TOKEN[lat]}"']
        assert rows["selected"].to_list() == [False, True]
        assert rows["train_score"].to_list() == [0.5, 1.0]
        assert rows["selection_score"].to_list() == [0.5, 1.0]
        assert (rows["prompt_tokens"] > 0).all()  # explain + its detection requests
    asked = [u for t, u in scripted.seen if t == "explain"]
    assert len(asked) == 2 * len(LATENTS)
    revisions = [u for u in asked if u.startswith("Your previous explanation")]
    assert len(revisions) == len(LATENTS)
    assert all(WRONG in u and "It missed these excerpts" in u for u in revisions)
    assert all("It picked no excerpt where the feature is silent" in u for u in revisions)
    plain = lambda s: s.replace("<<", "").replace(">>", "")  # noqa: E731
    explain_text = plain("\n".join(asked))
    detect_text = plain("\n".join(u for t, u in scripted.seen if t == "detection"))
    assert any(plain(t) in explain_text for t in texts(run, "train"))
    for t in texts(run, "selection") + texts(run, "test"):
        assert plain(t) not in explain_text  # never shown to the explainer
    sel = texts(run, "selection")
    assert all(plain(t) in detect_text for t in sel)  # only to choose the round
    assert not any(plain(t) in detect_text for t in texts(run, "test"))
    # the selected round is what `score` scores
    paths = score(run, cfg, scorers=["detection"], progress=False)
    det = pl.read_parquet(paths["detection"])
    assert set(det["explanation"]) == set(expl.filter(pl.col("selected"))["explanation"])


def test_other_explainers_leave_round_columns_null(run: Path, judge) -> None:
    server, _ = judge
    cfg = served(run, server, **{"explain.explainer": "default"})
    expl = pl.read_parquet(explain(run, cfg, latents=LATENTS, progress=False))
    assert expl["round"].is_null().all() and expl["train_score"].is_null().all()


def test_lexical_backend_rounds(run: Path) -> None:
    cfg = load_config(None, {"run_dir": str(run), "explain.explainer": "iterative"})
    expl = pl.read_parquet(explain(run, cfg, latents=LATENTS, progress=False))
    assert (expl.group_by("latent").agg(pl.col("selected").sum())["selected"] == 1).all()
    ok = expl.filter(pl.col("status") == "ok")
    assert ok["explanation"].str.starts_with("tokens: ").all()
    assert ok["train_score"].is_not_null().all() and ok["selection_score"].is_not_null().all()
    assert ok["round"].max() <= 2
    chosen = ok.filter(pl.col("selected")).join(
        ok.group_by("latent").agg(best=pl.col("selection_score").max()), on="latent"
    )
    assert (chosen["selection_score"] == chosen["best"]).all()
    again = pl.read_parquet(explain(run, cfg, latents=LATENTS, progress=False))
    assert again.equals(expl)  # deterministic, resumed: nothing redone
