"""explain + score + rescore end to end on a synthetic run: lexical backend, and the fake
OpenAI-compatible server with a scripted judge (counted hits, faults, malformed answers)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fake_server import Action, FakeServer
from llm_helpers import SECRET
from scripted_judge import ScriptedJudge
from stage_helpers import copy_run, served, synthetic_run

from autointerp.config import RunConfig, load_config
from autointerp.explainers.base import SCHEMA
from autointerp.explainers.run import explain
from autointerp.scorers.rescore import rescore
from autointerp.scorers.run import score
from autointerp.scorers.summary import summarize
from autointerp.text import vocab_for

N_LAT = 24
DOCS = Path(__file__).parents[1] / "docs"


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("base"), N_LAT)


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    return copy_run(base_run, tmp_path)


def lexical(run: Path, **overrides: object) -> RunConfig:
    return load_config(None, {"run_dir": str(run), **overrides})


@pytest.fixture
def judge_server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    judge = ScriptedJudge()
    srv = FakeServer(responder=judge).start()
    srv.judge = judge  # type: ignore[attr-defined]
    yield srv
    srv.stop()


def test_lexical_pipeline_writes_documented_tables(run: Path) -> None:
    cfg = lexical(run)
    path = explain(run, cfg, progress=False)
    expl = pl.read_parquet(path)
    assert list(expl.columns) == list(SCHEMA)
    assert expl["latent"].n_unique() == N_LAT and expl["selected"].all()
    status = dict(zip(expl["latent"], expl["status"], strict=True))
    assert status[0] == "skipped" and status[1] == "skipped"  # dead / fires 3 times
    assert expl.filter(pl.col("status") == "ok")["explanation"].str.starts_with("tokens: ").all()
    doc = (DOCS / "explain.md").read_text()
    assert all(f"`{c}`" in doc for c in expl.columns)

    paths = score(run, cfg, scorers=["detection", "fuzzing", "simulation"], progress=False)
    doc = (DOCS / "score.md").read_text()
    for name, p in paths.items():
        df = pl.read_parquet(p)
        assert df.height == N_LAT
        skipped = df.filter(pl.col("latent").is_in([0, 1]))
        assert (skipped["status"] == "skipped").all()
        metric = "pearson" if name == "simulation" else "balanced_accuracy"
        assert skipped[metric].is_nan().all()  # a failed/skipped latent never gets a number
        ok = df.filter(pl.col("status") == "ok")
        assert ok.height == N_LAT - 2 and ok[metric].is_finite().all()
        for col in df.columns:
            base = col.split("_q")[0] if "_q" in col else col
            assert f"`{base}`" in doc or base.rsplit("_", 1)[0] in doc, col
        ex = pl.read_parquet(p.with_name(f"{name}.examples.parquet"))
        assert set(ex["split"].unique()) == {"test"}
        assert ex["latent"].n_unique() == N_LAT - 2
    det = pl.read_parquet(paths["detection"]).filter(pl.col("status") == "ok")
    assert (det["balanced_accuracy_chance"] == 0.5).all()
    p = det["n_pos"] / det["n"]
    assert np.allclose(det["f1_chance"], 2 * p / (1 + p))
    summary = summarize(run)
    assert set(summary["scorer"]) == {"detection", "fuzzing", "simulation"}
    row = summary.filter((pl.col("scorer") == "detection") & (pl.col("metric") == "auroc"))
    assert row["scored"][0] == N_LAT - 2 and row["skipped"][0] == 2 and row["failed"][0] == 0


def test_true_explanation_beats_another_latents(run: Path) -> None:
    """Latent l fires on token l % 50 (synthetic_cache); its true explanation quotes that
    token. With the lexical judge, true beats shuffled for every scorer."""
    cfg = lexical(run)
    vocab = vocab_for(cfg.subject.model)
    latents = list(range(3, N_LAT))
    true = {lat: f'the token "{vocab.strings[lat % 50].strip()}"' for lat in latents}
    rows = [{"latent": lat, "explanation": true[lat]} for lat in latents]
    rows += [
        {"latent": lat, "explanation": true[latents[(i + 5) % len(latents)]]}
        for i, lat in enumerate(latents)
    ]
    src = run / "mixed.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in rows))
    paths = rescore(run, cfg, src, scorers=["detection", "fuzzing", "simulation"], progress=False)
    for name, metric in [("detection", "auroc"), ("fuzzing", "auroc"), ("simulation", "pearson")]:
        df = pl.read_parquet(paths[name])
        df = df.with_columns(
            true=pl.struct("latent", "explanation").map_elements(
                lambda r: true[r["latent"]] == r["explanation"], return_dtype=pl.Boolean
            )
        )
        good = df.filter(pl.col("true")).sort("latent")[metric].to_numpy()
        bad = df.filter(~pl.col("true")).sort("latent")[metric].to_numpy()
        assert np.nanmean(good) > np.nanmean(bad) + 0.2, name
        assert (np.nan_to_num(good) > np.nan_to_num(bad)).mean() >= 0.9, name


def test_resume_sends_nothing_twice(run: Path, judge_server: FakeServer) -> None:
    cfg = served(run, judge_server)
    scorers = ["detection", "fuzzing", "simulation"]
    explain(run, cfg, progress=False)
    score(run, cfg, scorers=scorers, progress=False)
    first = judge_server.hits
    assert first > 0
    before = {s: pl.read_parquet(run / "scores" / f"{s}.parquet") for s in scorers}
    explain(run, cfg, progress=False)
    score(run, cfg, scorers=scorers, progress=False)
    assert judge_server.hits == first  # done rows are skipped
    (run / "explanations.parquet").unlink()
    shutil.rmtree(run / "scores")
    explain(run, cfg, progress=False)
    score(run, cfg, scorers=scorers, progress=False)
    assert judge_server.hits == first  # rows lost, answers not: all from the response cache
    for s in scorers:
        again = pl.read_parquet(run / "scores" / f"{s}.parquet")
        diff = [c for c in again.columns if not again[c].equals(before[s][c])]
        # tokens and cost kept too; only what this run paid for and waited on differs
        assert diff == ["n_cached_requests", "latency_s"], s


def test_partial_run_then_rest(run: Path, judge_server: FakeServer) -> None:
    cfg = served(run, judge_server)
    explain(run, cfg, latents=range(0, 10), progress=False)
    hits_part = judge_server.hits
    explain(run, cfg, progress=False)
    expl = pl.read_parquet(run / "explanations.parquet")
    assert expl.height == N_LAT and expl.select("latent").is_unique().all()
    judge_seen = [u for t, u in judge_server.judge.seen if t == "explain"]
    assert len(judge_seen) == judge_server.hits  # one request per explained latent
    assert hits_part == len(expl.filter((pl.col("latent") < 10) & (pl.col("status") == "ok")))


def test_unparseable_explanation_is_an_error_row_never_scored(
    run: Path, judge_server: FakeServer
) -> None:
    judge_server.script(*[Action(text="I cannot tell.")] * (N_LAT - 2))  # no JSON, no marker
    cfg = served(run, judge_server, **{"llm.json_attempts": 1})
    expl = pl.read_parquet(explain(run, cfg, progress=False))
    failed = expl.filter(pl.col("status") == "failed")
    assert failed.height == N_LAT - 2
    assert failed["raw_text"].str.contains("cannot tell").all()
    assert failed["explanation"].is_null().all()
    hits = judge_server.hits
    paths = score(run, cfg, scorers=["detection"], progress=False)
    assert judge_server.hits == hits  # nothing scored: no explanation to score
    df = pl.read_parquet(paths["detection"])
    assert (
        df.filter(pl.col("status") == "failed")["error"].str.starts_with("explanation failed")
    ).all()
    assert df["balanced_accuracy"].is_nan().all()
    s = summarize(run).filter(pl.col("metric") == "balanced_accuracy")
    assert s["failed"][0] == N_LAT - 2 and s["scored"][0] == 0 and math.isnan(s["mean"][0])


def test_judge_faults_lose_examples_and_count_them(run: Path, judge_server: FakeServer) -> None:
    cfg = served(run, judge_server, **{"llm.max_attempts": 1, "llm.json_attempts": 1})
    explain(run, cfg, latents=[5], progress=False)
    judge_server.script(Action(status=500), Action(text="not json at all"))
    paths = score(run, cfg, scorers=["detection"], latents=[5], progress=False)
    row = pl.read_parquet(paths["detection"]).row(0, named=True)
    ex = pl.read_parquet(paths["detection"].with_name("detection.examples.parquet"))
    lost = ex.filter(pl.col("error").is_not_null())
    assert row["n_lost"] == lost.height > 0 and row["n_failed_requests"] == 2
    assert row["n_examples"] + row["n_lost"] == ex.height
    assert lost["prediction"].is_null().all()
    assert row["status"] == "ok" and row["n"] == row["n_examples"]


def test_best_of_k_never_reads_test_windows(run: Path, judge_server: FakeServer) -> None:
    cfg = served(run, judge_server, **{"explain.explainer": "best-of-k", "explain.k": 3})
    expl = pl.read_parquet(explain(run, cfg, latents=range(3, 9), progress=False))
    assert expl.height == 6 * 3
    assert (expl.group_by("latent").agg(pl.col("selected").sum())["selected"] == 1).all()
    ok = expl.filter(pl.col("status") == "ok")
    assert ok["selection_score"].is_not_null().all()
    best = ok.group_by("latent").agg(pl.col("selection_score").max())
    chosen = ok.filter(pl.col("selected")).join(best, on="latent", suffix="_best")
    assert (chosen["selection_score"] == chosen["selection_score_best"]).all()
    vocab = vocab_for(cfg.subject.model)
    ex = pl.read_parquet(run / "examples" / "model.layers.1.parquet")
    seen = "\n".join(u for _, u in judge_server.judge.seen)
    prompts = seen.replace("<<", "").replace(">>", "")
    for split, must in [("test", False), ("train", True), ("selection", True)]:
        texts = [
            vocab.text(t)
            for t in ex.filter((pl.col("split") == split) & pl.col("latent").is_in(range(3, 9)))[
                "tokens"
            ].to_list()
        ]
        found = sum(t in prompts for t in texts)
        assert (found > 0) == must, split


def test_rescore_sources_and_missing_latents(run: Path) -> None:
    cfg = lexical(run)
    (run / "np.json").write_text(json.dumps([{"index": 4, "description": 'the token "x"'}]))
    (run / "e.csv").write_text('feature,label\n5,"the token ""y"""\n6,\n')
    delphi = run / "delphi"
    delphi.mkdir()
    (delphi / "layers.1_latent7.txt").write_text(json.dumps('the token "z"'))
    for src, kw in [
        (run / "np.json", {}),
        (run / "e.csv", {"latent_column": "feature", "explanation_column": "label"}),
        (delphi, {}),
    ]:
        paths = rescore(run, cfg, src, scorers=["detection"], progress=False, **kw)
    df = pl.read_parquet(paths["detection"])
    assert sorted(df["latent"].to_list()) == [4, 5, 6, 7]
    assert df.filter(pl.col("latent") == 6)["status"][0] == "failed"  # empty text
    assert set(df["explainer"]) == {"import:np.json", "import:e.csv", "import:delphi"}
    imported = pl.read_parquet(run / "imported_explanations.parquet")
    assert imported.height == 4
    before = pl.read_parquet(paths["detection"])
    rescore(run, cfg, run / "np.json", scorers=["detection"], progress=False)
    assert pl.read_parquet(paths["detection"]).height == before.height  # nothing rescored
    (run / "bad.jsonl").write_text('{"latent": 3}\n{"latent": 999, "explanation": "a"}\n')
    with pytest.raises(ValueError, match=r"1 latent\(s\) have no examples .*999"):
        rescore(run, cfg, run / "bad.jsonl", progress=False)
    with pytest.raises(ValueError, match="no latent column"):
        (run / "nolat.csv").write_text("a,explanation\n1,x\n")
        rescore(run, cfg, run / "nolat.csv", progress=False)


def test_imported_explanations_are_cleaned_and_capped(run: Path) -> None:
    cfg = lexical(run, **{"score.import_max_chars": 20})
    rows = [
        {"latent": 4, "explanation": 'the\u200b token\x00 \u202e"x"\x1b[31m\n here'},
        {"latent": 5, "explanation": "a" * 30 + " and more"},
    ]
    (run / "np.json").write_text(json.dumps(rows))
    rescore(run, cfg, run / "np.json", scorers=["detection"], progress=False)
    got = dict(
        pl.read_parquet(run / "imported_explanations.parquet")
        .select("latent", "explanation")
        .iter_rows()
    )
    assert got == {4: 'the token "x"[31m here'[:20], 5: "a" * 20}
    scored = pl.read_parquet(run / "scores" / "detection.parquet")
    assert scored["explanation"].str.len_chars().max() <= 20


def test_force_redoes_and_replaces_rows(run: Path, judge_server: FakeServer) -> None:
    cfg = served(run, judge_server)
    explain(run, cfg, latents=range(3, 8), progress=False)
    explain_hits = judge_server.hits
    score(run, cfg, scorers=["detection"], latents=range(3, 8), progress=False)
    hits = judge_server.hits
    explain(run, cfg, latents=range(3, 8), force=True, progress=False)
    assert judge_server.hits == hits + explain_hits  # --force asks the explainer again
    paths = score(run, cfg, scorers=["detection"], latents=range(3, 8), force=True, progress=False)
    assert judge_server.hits == 2 * hits  # and the judge: no cached answer of an earlier run
    expl = pl.read_parquet(run / "explanations.parquet")
    assert expl.height == 5 and expl.select("latent").is_unique().all()
    det = pl.read_parquet(paths["detection"])
    assert det.height == 5 and det.select("latent").is_unique().all()
    assert not (run / "scores" / "_parts").exists() and not (run / "_parts").exists()


def test_failed_rows_are_retried_on_rerun(run: Path, judge_server: FakeServer) -> None:
    cfg = served(run, judge_server, **{"llm.max_attempts": 1})
    judge_server.script(Action(status=500), Action(status=500))
    expl = pl.read_parquet(explain(run, cfg, latents=[5, 6], progress=False))
    assert (expl["status"] == "failed").all() and expl["error"].str.contains("500").all()
    expl = pl.read_parquet(explain(run, cfg, latents=[5, 6], progress=False))
    assert (expl["status"] == "ok").all() and expl.height == 2  # replaced, not appended


def test_parallel_workers_write_the_same_scores(run: Path, tmp_path: Path) -> None:
    cfg = lexical(run)
    explain(run, cfg, progress=False)
    one = score(run, cfg, scorers=["detection", "fuzzing"], progress=False)
    frames = {n: pl.read_parquet(p).drop("latency_s") for n, p in one.items()}
    shutil.rmtree(run / "scores")
    cfg2 = lexical(run, **{"score.workers": 2})
    two = score(run, cfg2, scorers=["detection", "fuzzing"], progress=False)
    for name, path in two.items():
        got = pl.read_parquet(path).drop("latency_s")
        diff = [c for c in got.columns if not got[c].equals(frames[name][c])]
        assert diff == [], (
            name,
            diff,
            [got[c].to_list()[:4] for c in diff[:2]],
            [frames[name][c].to_list()[:4] for c in diff[:2]],
        )
        ex = pl.read_parquet(path.with_name(f"{name}.examples.parquet"))
        assert ex.height > 0 and ex["latent"].n_unique() == N_LAT - 2
    assert not (run / "scores" / "_parts").exists()


def test_parallel_scoring_resumes_without_repeating_calls(
    run: Path, judge_server: FakeServer
) -> None:
    cfg = served(run, judge_server, **{"score.workers": 2})
    explain(run, cfg, progress=False)
    score(run, cfg, scorers=["detection"], progress=False)
    hits = judge_server.hits
    assert not list(run.glob("llm_cache.*.sqlite"))  # worker shards merged into the main file
    shutil.rmtree(run / "scores")
    score(run, cfg, scorers=["detection"], progress=False)
    assert judge_server.hits == hits  # every answer came from the merged response cache


def test_progress_bars_show_while_explaining_and_scoring(run: Path) -> None:
    cfg = lexical(run)
    explain(run, cfg, latents=range(3, 9), progress=True)
    paths = score(run, cfg, scorers=["detection"], latents=range(3, 9), progress=True)
    assert pl.read_parquet(paths["detection"]).height == 6
