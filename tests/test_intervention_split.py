"""The intervention pre-pass never leaks the test split into the `output` explainer's views
(calibration and steering view on train prompts, scored completions from test prompts), and
the intervention judge's distractors are fixed by seed and latent, not by the batch."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
import torch
from stage_helpers import synthetic_run

from autointerp.cache.reader import ActivationCache
from autointerp.llm.types import LLMResponse
from autointerp.output_views import read_views
from autointerp.runner.examples import LatentExamples
from autointerp.scorers import intervention_data
from autointerp.scorers.base import ScoreContext, Tally
from autointerp.scorers.calibration import Calibration
from autointerp.scorers.config import InterventionConfig, ScoreConfig
from autointerp.scorers.intervention import InterventionScorer

HP = "model.layers.1"
N_LAT = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("split"), N_LAT)


def _prompt_sources(run: Path, latent: int, cfg: InterventionConfig) -> dict[str, set]:
    """Per split, every prompt (as a token tuple) the latent's activating windows of that
    split can give: the sequence up to the latent's first firing."""
    ex = pl.read_parquet(run / "examples" / f"{HP}.parquet").filter(
        (pl.col("latent") == latent) & (pl.col("kind") == "activating")
    )
    cache = ActivationCache(run, HP)
    tokens = cache.tokens()
    acts = cache.read_latents(latent, latent + 1)
    first = dict(acts.group_by("seq_id").agg(pl.col("pos").min()).iter_rows())
    out: dict[str, set] = {}
    for split in ("train", "test"):
        seqs = set(ex.filter(pl.col("split") == split)["seq_id"].to_list())
        out[split] = {
            tuple(tokens[s, max(0, first[s] - cfg.prompt_max_tokens) : first[s]].tolist())
            for s in seqs
            if first[s] >= cfg.prompt_min_tokens
        }
    return out


def test_steering_views_come_from_train_prompts_scores_from_test(run: Path, monkeypatch) -> None:
    seen: dict[str, dict[int, list[list[int]]]] = {}

    class FakeCalibrator:
        forward_calls = 0

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            pass

        def calibrate(self, todo, rows, prompts, *rest):  # noqa: ANN001, ANN202
            seen["calibrate"] = prompts
            return {
                lat: Calibration(1.0, 0.5, 1, True, [lat], [0.1])
                if prompts.get(lat)
                else Calibration()
                for lat in todo
            }

    def fake_generate(subj, hookpoint, cfg, latents, prompts, alphas, seed):  # noqa: ANN001, ANN202
        seen["generate"] = {lat: prompts[lat] for lat in latents}
        return {lat: (["c"] * len(prompts[lat]), ["s"] * len(prompts[lat])) for lat in latents}

    def fake_lens(hookpoint, latents, model, rows, tokens, k=10):  # noqa: ANN001, ANN202
        return [
            {"hookpoint": hookpoint, "latent": lat, "lens_top": [], "lens_top_logit": []}
            | {"lens_bottom": [], "lens_bottom_logit": [], "steer_top": None}
            | {"steer_top_delta": None}
            for lat in latents
        ]

    monkeypatch.setattr(intervention_data, "Calibrator", FakeCalibrator)
    monkeypatch.setattr(intervention_data, "generate", fake_generate)
    monkeypatch.setattr(intervention_data, "lens_rows", fake_lens)
    subj = SimpleNamespace(
        model=None,
        pad_id=0,
        coder=SimpleNamespace(decoder_rows=torch.zeros(N_LAT, 8)),
        decode=lambda ids: " ".join(map(str, ids)),
        token_strings=lambda ids: [f"t{i}" for i in ids],
    )
    cfg = InterventionConfig(n_prompts=50, prompt_min_tokens=4)
    todo = list(range(2, 10))
    intervention_data._prepare_block(run, HP, cfg, todo, 0, "s", subj)  # type: ignore[arg-type]
    n_cal = n_gen = 0
    for lat in todo:
        src = _prompt_sources(run, lat, cfg)
        assert not src["train"] & src["test"]  # splits are drawn by sequence
        cal = {tuple(p) for p in seen["calibrate"].get(lat, [])}
        gen = {tuple(p) for p in seen["generate"].get(lat, [])}
        assert cal <= src["train"] and not cal & src["test"], lat
        assert gen <= src["test"] and not gen & src["train"], lat
        n_cal, n_gen = n_cal + len(cal), n_gen + len(gen)
    assert n_cal > 0 and n_gen > 0
    views = read_views(run, HP)
    # the output explainer's steering view is the train calibration's (token ids [lat])
    assert all(views[lat]["steer_top"] == [f"t{lat}"] for lat in todo if seen["calibrate"][lat])


class _Judge:
    async def generate(self, request: Any) -> LLMResponse:
        return LLMResponse(text='{"choice": 1}', parsed={"choice": 1})


def _distractors(run: Path, batch: list[int], monkeypatch, latent: int) -> list[list[int]]:
    store: dict[int, dict[str, Any]] = {}

    def fake_prepare(run_dir, hookpoint, cfg, latents, seed):  # noqa: ANN001, ANN202
        for lat in latents:  # odd latents have no steered completions: never a distractor
            store[lat] = {"steered": [] if lat % 2 else [f"s{lat}"], "alpha": 1.0}
        return dict(store)

    monkeypatch.setattr(intervention_data, "prepare_hookpoint", fake_prepare)
    ctx = ScoreContext(config=ScoreConfig(), seed=3, llm_model="lexical", backend="lexical")
    scorer = InterventionScorer(ctx)
    scorer.prepare(run, None, HP, batch, [])
    ex = LatentExamples(HP, latent, [], vocab=None)  # type: ignore[arg-type]
    rows = asyncio.run(
        scorer._judge(ex, "e", store[latent], _Judge(), Tally(), {"latent": str(latent)})
    )
    return [r["distractors"] for r in rows]


def test_judge_distractors_do_not_depend_on_the_batch(run: Path, monkeypatch) -> None:
    alone = _distractors(run, [4], monkeypatch, 4)
    small = _distractors(run, [4, 6], monkeypatch, 4)
    big = _distractors(run, [4, 2, 8, 10, 12, 14], monkeypatch, 4)
    assert len(alone) == InterventionConfig().judge_trials
    assert alone == small == big
    flat = [d for pair in alone for d in pair]
    assert all(d % 2 == 0 and d != 4 for d in flat)  # usable, never the latent itself
    assert len(set(flat)) == len(flat)  # distinct distractors across trials
    assert _distractors(run, [6], monkeypatch, 6) != alone  # each latent has its own order
