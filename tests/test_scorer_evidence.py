"""What each judge scorer must show, proven from the judge's side: the judges here get only the
prompt text over HTTP (tests/scripted_judge.py: the explanation's quoted tokens) or an
explanation-free cue. On a clean synthetic run (latent l fires on every occurrence of its token and
nowhere else) with true explanations:

- fuzzing is decided by WHERE the highlights are: a judge that reads them beats, by a margin, a
  judge that ignores them (it answers "does the window contain the feature anywhere"), which
  only wrongly highlighted activating windows can expose;
- "yes iff anything is highlighted" scores chance in fuzzing (contrast windows are highlighted
  too), and detection windows are shown plain (no highlight to read);
- the explainer is shown train windows, never a test window.
These are the tests that kill the scorer mutations of scripts/mutation_check.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.stats
import torch
from fake_server import FakeServer
from llm_helpers import SECRET
from scripted_judge import ScriptedJudge, Spans, default_detect, excerpts_of, marked_of
from stage_helpers import copy_run, served
from synthetic_cache import write_cache

from autointerp.explainers.run import explain
from autointerp.sampling import SampleConfig
from autointerp.sampling.build import build_examples
from autointerp.scorers.rescore import rescore
from autointerp.text import highlighted_spans, vocab_for

N_LAT = 16
LATENTS = range(N_LAT)
FIRST = 34  # latent l fires on token FIRST + l: the demo vocab's "A".."P"
SHOWN = np.r_[17:27, 34:50]  # digits and capitals: no quote, marker or special token


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 sequences of 32 random letters and digits after BOS; latent l fires on token
    FIRST + l."""
    run = tmp_path_factory.mktemp("evidence")
    rng = np.random.default_rng(3)
    tokens = rng.choice(SHOWN, size=(300, 32)).astype(np.int32)
    tokens[:, 0] = 0
    hit = tokens[:, :, None] == FIRST + np.arange(N_LAT)[None, None, :]
    dense = np.where(hit, 1 + rng.random(hit.shape), 0.0).astype(np.float32)
    dense[:, 0, :] = 0
    write_cache(run, tokens, dense)
    decoder = torch.randn(N_LAT, 8, generator=torch.Generator().manual_seed(0))
    build_examples(run, SampleConfig(seed=1, window_len=16), decoder=decoder, progress=False)
    return run


def judged(base: Path, tmp: Path, judge: ScriptedJudge, scorer: str, name: str) -> pl.DataFrame:
    """Score each latent's true explanation with ``scorer`` on a fresh copy of the run, judged
    over the fake server by ``judge``; the scores table."""
    run = copy_run(base, tmp / name)
    server = FakeServer(responder=judge).start()
    try:
        cfg = served(run, server)
        vocab = vocab_for(cfg.subject.model)
        rows = [
            {"latent": lat, "explanation": f'the token "{vocab.strings[FIRST + lat]}"'}
            for lat in LATENTS
        ]
        src = run / "true.jsonl"
        src.write_text("\n".join(json.dumps(r) for r in rows))
        paths = rescore(run, cfg, src, scorers=[scorer], progress=False)
    finally:
        server.stop()
    return pl.read_parquet(paths[scorer]).filter(pl.col("status") == "ok")


def shown_windows(judge: ScriptedJudge, task: str) -> list[str]:
    return [w for t, user in judge.seen if t == task for w in excerpts_of(user)]


def shown_marks(judge: ScriptedJudge) -> list[Spans]:
    """Per fuzzing window shown, the spans its ``Marked:`` line names."""
    return [sp for t, user in judge.seen if t == "fuzzing" for sp in marked_of(user) or []]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)


def test_fuzzing_is_decided_by_where_the_highlights_are(base_run: Path, tmp_path: Path) -> None:
    reader = ScriptedJudge()

    def blind(explanation: str, text: str, spans: Spans) -> bool:
        return default_detect(explanation, text)

    ignores = ScriptedJudge(fuzz=blind)
    read = judged(base_run, tmp_path, reader, "fuzzing", "reads")
    not_read = judged(base_run, tmp_path, ignores, "fuzzing", "ignores")
    assert read.height == not_read.height == len(LATENTS)
    good, bad = read["balanced_accuracy"].to_numpy(), not_read["balanced_accuracy"].to_numpy()
    assert good.mean() >= 0.95, good
    # only windows that hold the feature but show highlights elsewhere tell the two apart
    assert good.mean() >= bad.mean() + 0.1, (good, bad)
    assert (good > bad).mean() >= 0.9, (good, bad)
    # and such windows were shown: text with the explanation's token, highlights off it
    windows = shown_windows(ignores, "fuzzing")
    assert windows and len(windows) == read["n_examples"].sum()


def test_anything_highlighted_is_no_cue_in_fuzzing(base_run: Path, tmp_path: Path) -> None:
    def any_highlight(explanation: str, text: str, spans: Spans) -> bool:
        return bool(spans)

    judge = ScriptedJudge(fuzz=any_highlight)
    df = judged(base_run, tmp_path, judge, "fuzzing", "cue")
    assert np.allclose(df["balanced_accuracy"].to_numpy(), df["balanced_accuracy_chance"])
    windows, marks = shown_windows(judge, "fuzzing"), shown_marks(judge)
    assert len(windows) == len(marks) == df["n_examples"].sum()
    assert all(marks)  # every window has marks, listed apart from its plain text
    assert not any(highlighted_spans(w)[1] for w in windows)


def test_detection_windows_are_shown_plain(base_run: Path, tmp_path: Path) -> None:
    judge = ScriptedJudge()
    df = judged(base_run, tmp_path, judge, "detection", "plain")
    windows = shown_windows(judge, "detection")
    assert len(windows) == df["n_examples"].sum() > 0
    assert not any(highlighted_spans(w)[1] for w in windows)
    assert df["balanced_accuracy"].mean() >= 0.9


def test_the_explainer_is_shown_train_windows_never_test(base_run: Path, tmp_path: Path) -> None:
    run = copy_run(base_run, tmp_path)
    judge = ScriptedJudge()
    server = FakeServer(responder=judge).start()
    try:
        cfg = served(run, server)
        expl = pl.read_parquet(explain(run, cfg, latents=LATENTS, progress=False))
    finally:
        server.stop()
    assert (expl["status"] == "ok").all() and expl.height == len(LATENTS)
    prompts = "\n".join(u for t, u in judge.seen if t == "explain")
    plain = highlighted_spans(prompts)[0]
    vocab = vocab_for(cfg.subject.model)
    ex = pl.read_parquet(run / "examples" / "model.layers.1.parquet")
    ex = ex.filter(pl.col("latent").is_in(list(LATENTS)) & (pl.col("kind") == "activating"))
    before, after = cfg.explain.context_before, cfg.explain.context_after

    def cut(tokens: list[int], acts: list[float]) -> str:
        """The window as explain shows it: ``before`` tokens before its peak, ``after`` after."""
        peak = int(np.argmax(acts))
        return vocab.text(tokens[max(0, peak - before) : peak + after + 1])

    for split, must in [("test", False), ("train", True)]:
        rows = ex.filter(pl.col("split") == split)
        texts = [cut(t, a) for t, a in zip(rows["tokens"], rows["activations"], strict=True)]
        found = sum(t in plain for t in texts)
        assert found > len(texts) // 2 if must else found == 0, (split, found, len(texts))


def test_simulation_is_scored_against_the_shown_windows_truth(
    base_run: Path, tmp_path: Path
) -> None:
    """Each latent's Pearson equals scipy's over its windows' tokens, where the truth is the
    sampled window's activations and the prediction is what the judge answered for it."""
    df = judged(base_run, tmp_path, ScriptedJudge(), "simulation", "sim")
    run = tmp_path / "sim" / "run"
    ex = pl.read_parquet(run / "scores" / "simulation.examples.parquet")
    windows = pl.read_parquet(run / "examples" / "model.layers.1.parquet").filter(
        pl.col("split") == "test"
    )
    keys = ["latent", "seq_id", "start"]
    joined = ex.join(windows.select(*keys, "activations"), on=keys, how="left")
    assert joined.height == ex.height and joined["activations"].null_count() == 0
    for truth, sampled in zip(joined["truth"], joined["activations"], strict=True):
        assert np.allclose(truth.to_numpy(), sampled.to_numpy())
    assert df.height == len(LATENTS)
    for latent, pearson in zip(df["latent"], df["pearson"], strict=True):
        rows = ex.filter(pl.col("latent") == latent)
        truth = np.concatenate([t.to_numpy() for t in rows["truth"]])
        pred = np.concatenate([p.to_numpy() for p in rows["prediction"]])
        assert pearson == pytest.approx(scipy.stats.pearsonr(truth, pred)[0], abs=1e-6)
        assert pearson > 0.9


def test_fuzzing_prompt_starts_with_the_detection_prompt(base_run: Path, tmp_path: Path) -> None:
    """Fuzzing shows the same windows in the same batches, plain, under the same system prompt:
    each fuzzing prompt is the detection prompt of its windows up to the description, then the
    marks (so a prefix cache computes the windows once for both)."""
    judge = ScriptedJudge()
    run = copy_run(base_run, tmp_path / "both")
    server = FakeServer(responder=judge).start()
    try:
        cfg = served(run, server)
        src = run / "true.jsonl"
        src.write_text(json.dumps({"latent": 0, "explanation": 'the token "A"'}))
        rescore(run, cfg, src, scorers=["detection", "fuzzing"], progress=False)
    finally:
        server.stop()
    bodies = [r["body"] for r in server.requests if r["path"].endswith("/chat/completions")]
    by_task: dict[str, list[list[dict[str, str]]]] = {"detection": [], "fuzzing": []}
    for body in bodies:
        user = body["messages"][-1]["content"]
        by_task["fuzzing" if marked_of(user) is not None else "detection"].append(body["messages"])
    det, fuz = by_task["detection"], by_task["fuzzing"]
    assert len(det) == len(fuz) >= 2
    assert {m[0]["content"] for m in det + fuz} == {det[0][0]["content"]}  # one system prompt
    cut = "\n\nDescription: "
    heads = sorted(m[-1]["content"].split(cut)[0] for m in det)
    fuzz_heads = sorted(m[-1]["content"].split("\n\nMarked:\n")[0] for m in fuz)
    assert heads == fuzz_heads
