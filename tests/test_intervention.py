"""Steering, KL calibration, the intervention scorer and output views on the bundled demo LM
(2 layers, hidden 256): latents whose decoder rows are planted along the unembedding of a
known token (" return", " import") push that token."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from coder_files import write_sparsify
from fake_server import FakeServer
from llm_helpers import SECRET
from safetensors.torch import load_file, save_file
from synthetic_cache import random_cache

from autointerp.config import DEMO_MODEL, SubjectConfig, load_config
from autointerp.explainers.run import explain
from autointerp.llm.client import create_client
from autointerp.output_views import logit_lens, read_views
from autointerp.runner.examples import LatentExamples
from autointerp.sampling import SampleConfig
from autointerp.sampling.build import build_examples
from autointerp.scorers.base import KEY_SCHEMA, SCORE_SCHEMA, ScoreContext
from autointerp.scorers.calibration import Calibrator
from autointerp.scorers.intervention import InterventionScorer, distractor_order
from autointerp.scorers.intervention_data import generate, store_path
from autointerp.scorers.run import score
from autointerp.subject.model import load_subject
from autointerp.subject.steering import Steering, last_logits
from autointerp.text import Vocab

HP = "model.layers.1"
RETURN, IMPORT = 342, 624  # " return", " import" in the demo tokenizer


@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    model, tok = load_subject(SubjectConfig(model=DEMO_MODEL, device="cpu"))
    # prompts from a file that does not change with this project (they did, from text.py)
    src = (Path(os.__file__).parent / "textwrap.py").read_text()
    ids = tok(src, add_special_tokens=False)["input_ids"]
    prompts = [ids[i : i + 12 + i % 5] for i in range(0, 8 * 40, 40)]
    emb = model.get_output_embeddings().weight.detach()
    g = torch.Generator().manual_seed(1)
    dirs = torch.stack([emb[RETURN], emb[IMPORT], torch.randn(emb.shape[1], generator=g) * 0.05])
    return model, tok, prompts, dirs


def test_calibration_hits_the_target_kl_batched_equals_single(demo) -> None:
    model, tok, prompts, dirs = demo
    cal = Calibrator(model, HP, tok.pad_token_id, batch_rows=64)
    per = {i: prompts for i in range(3)}
    found = cal.calibrate([0, 1, 2], dirs, per, target=0.5, tol=0.1, max_steps=12)
    for lat, c in found.items():
        assert c.converged and abs(c.kl - 0.5) <= 0.05 and 1 <= c.n_forward <= 12, (lat, c)
        # the batched KL equals a plain forward of this latent alone
        clean = torch.log_softmax(last_logits(model, prompts, tok.pad_token_id), -1)
        rows = dirs[lat].expand(len(prompts), -1)
        with Steering(model, HP, rows, torch.full((len(prompts),), c.alpha)):
            steered = torch.log_softmax(last_logits(model, prompts, tok.pad_token_id), -1)
        kl = (clean.exp() * (clean - steered)).sum(-1).mean().item()
        assert kl == pytest.approx(c.kl, rel=1e-3)
    assert found[0].steer_top[0] == RETURN and found[1].steer_top[0] == IMPORT
    # one forward handles every latent: far fewer calls than latents x rounds
    assert cal.forward_calls <= 2 + max(c.n_forward for c in found.values())


def test_logit_lens_lists_the_planted_token_first(demo) -> None:
    model, _, _, dirs = demo
    top, _, bottom, _ = logit_lens(model, dirs[:2], k=5, chunk=1)
    assert top[0, 0].item() == RETURN and top[1, 0].item() == IMPORT
    assert RETURN not in bottom[0].tolist()


def _steered_data(demo) -> dict[int, dict]:
    model, tok, prompts, dirs = demo
    cfg = load_config(None, {}).score.intervention.model_copy(update={"completion_tokens": 12})
    cal = Calibrator(model, HP, tok.pad_token_id)
    per = {i: prompts for i in range(3)}
    found = cal.calibrate([0, 1, 2], dirs, per, 0.5, 0.1, 12)

    class Subj:
        pass

    subj = Subj()
    subj.model, subj.pad_id, subj.coder = model, tok.pad_token_id, type("C", (), {})()
    subj.coder.decoder_rows = dirs
    subj.decode = lambda ids: tok.decode(ids, skip_special_tokens=True)
    texts = generate(subj, HP, cfg, [0, 1, 2], per, {k: c.alpha for k, c in found.items()}, 0)
    return {
        lat: {
            "alpha": found[lat].alpha,
            "kl": found[lat].kl,
            "n_forward": found[lat].n_forward,
            "prompts": [tok.decode(p) for p in prompts],
            "clean": texts[lat][0],
            "steered": texts[lat][1],
        }
        for lat in range(3)
    }


def test_steered_completions_contain_the_pushed_token_more_often(demo) -> None:
    data = _steered_data(demo)
    clean = sum(t.count("return") for t in data[0]["clean"])
    steered = sum(t.count("return") for t in data[0]["steered"])
    assert steered > clean + 2, (clean, steered)


def passage_scorer(tokens: list[str], request: dict) -> list[float]:
    """A scripted scorer LM: a word of the explanation that appears in the passage costs 0.5
    nats, any other token 3.0 (the fake server splits on whitespace)."""
    passage = request["prompt"].rpartition("The passage above is about:")[0]
    return [-0.5 if t.strip('"') in passage else -3.0 for t in tokens[1:]]


def test_correct_explanation_beats_a_wrong_one_on_both_scores(demo, tmp_path, monkeypatch):
    data = _steered_data(demo)
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)

    def judge(body: dict) -> str:  # the lexical judge's rule, over the fake server
        from autointerp.llm.lexical import steer_judge

        if "messages" not in body:
            return "x"  # a surprisal request: only its prompt logprobs are read
        text = body["messages"][-1]["content"]
        expl = text.split("\n")[0].removeprefix("Explanation: ")
        sets = [[blk] for blk in text.split("Set ")[1:]]
        return json.dumps({"choice": steer_judge({"explanation": expl, "sets": sets})["choice"]})

    server = FakeServer(responder=judge, prompt_scorer=passage_scorer).start()
    try:
        over = {
            "run_dir": str(tmp_path),
            "llm.model": "openai:fake",
            "llm.base_url": server.base_url,
            "llm.api_key_env": "FAKE_LLM_KEY",
            "score.intervention.surprisal_backend": "llm",
            "score.intervention.judge_trials": 6,
        }
        cfg = load_config(None, over)
        s = InterventionScorer(ScoreContext(cfg.score, 0, cfg.llm.model, "openai"))
        s._data[HP] = data
        s._orders[HP] = {0: distractor_order(sorted(data), 0, 0, HP)}  # what prepare sets
        ex = LatentExamples(HP, 0, [], Vocab.__new__(Vocab))

        async def go(expl: str):
            async with create_client(cfg.llm, tmp_path) as client:
                return await s.score(ex, expl, client)

        right, wrong = asyncio.run(go("return")), asyncio.run(go("import"))
    finally:
        server.stop()
    r, w = right.metrics, wrong.metrics
    assert r["surprisal_score"] > 0 and r["surprisal_score"] > w["surprisal_score"]
    assert r["judge_accuracy"] == 1.0 and w["judge_accuracy"] == 0.0
    assert r["judge_accuracy_chance"] == pytest.approx(1 / 3) and r["kl"] == pytest.approx(
        data[0]["kl"]
    )
    assert right.tally.requests == 2 * 8 + 6
    assert list(r) == list(s.empty_metrics())  # an unscored row has the same metric columns
    assert {e["task"] for e in right.examples} == {"surprisal", "judge"}


def test_demo_run_lexical_end_to_end_resumes(tmp_path: Path, monkeypatch) -> None:
    import autointerp.scorers.intervention_data as idata

    monkeypatch.setattr(idata, "BLOCK_LATENTS", 2)  # 5 latents: stored in 3 blocks
    writes: list[list[int]] = []
    store = idata.write_store
    monkeypatch.setattr(
        idata,
        "write_store",
        lambda d, h, rows: (writes.append([r["latent"] for r in rows]), store(d, h, rows)),
    )
    run = tmp_path / "run"
    random_cache(run, n_seqs=120, n_latents=8, vocab=800)
    coder = write_sparsify(tmp_path / "coder", d_in=256, n_latents=8, k=4)
    w = load_file(str(coder.folder / "sae.safetensors"))
    lm, _ = load_subject(SubjectConfig(model=DEMO_MODEL, device="cpu"))
    w["W_dec"][3] = lm.get_output_embeddings().weight.detach()[RETURN]  # plant latent 3
    save_file(w, str(coder.folder / "sae.safetensors"))
    meta_path = run / "cache" / HP / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "coder": str(coder.folder)}))
    build_examples(run, SampleConfig(seed=1, window_len=16), progress=False)
    over = {"run_dir": str(run), "score.intervention.device": "cpu", "score.n_boot": 50}
    cfg = load_config(None, over)
    explain(run, cfg, progress=False)
    paths = score(run, cfg, scorers=["intervention"], latents=range(2, 7), progress=False)
    df = pl.read_parquet(paths["intervention"])
    ok = df.filter(pl.col("status") == "ok")
    assert ok.height >= 4, df.select("latent", "status", "error")
    assert ((ok["kl"] - 0.5).abs() <= 0.05).all() and (ok["judge_accuracy_chance"] == 1 / 3).all()
    assert ok["surprisal_score"].is_finite().all() and ok["judge_accuracy"].is_finite().all()
    views = read_views(run, HP)
    # the batch and the distractors its judge prompts need (all other latents: 8 in the run)
    assert set(views) == set(range(8)) and views[3]["lens_top"][0] == " return"
    stamp = os.stat(store_path(run, HP)).st_mtime_ns
    again = score(run, cfg, scorers=["intervention"], latents=range(2, 7), progress=False)
    assert pl.read_parquet(again["intervention"]).height == df.height
    assert os.stat(store_path(run, HP)).st_mtime_ns == stamp  # nothing recalibrated
    assert writes[:3] == [[2, 3], [4, 5], [6]]  # the batch, then the missing distractors
    assert sorted(x for w in writes[3:] for x in w) == [0, 1, 7]
    ex = pl.read_parquet(paths["intervention"].with_name("intervention.examples.parquet"))
    assert set(ex["task"].unique()) == {"surprisal", "judge"}
    doc = (Path(__file__).parents[1] / "docs" / "intervention.md").read_text()
    common = {*SCORE_SCHEMA, *KEY_SCHEMA}  # documented in docs/score.md
    for col in [c for c in [*ok.columns, *ex.columns, *views[3]] if c not in common]:
        assert f"`{col.removesuffix('_lo').removesuffix('_hi')}`" in doc or f"`{col}`" in doc, col
    assert np.isfinite(ok["alpha"].to_numpy()).all()
    out = load_config(None, {**over, "explain.explainer": "output", "explain.top_tokens": 3})
    path = explain(run, out, latents=[3], progress=False)
    got = pl.read_parquet(path).filter((pl.col("explainer") == "output") & (pl.col("latent") == 3))
    # the lexical baseline lists the steering view's top tokens (computed on train prompts)
    top = read_views(run, HP)[3]["steer_top"][:3]
    assert " return" in top
    assert got["explanation"][0] == "tokens: " + ", ".join(json.dumps(t) for t in top)
