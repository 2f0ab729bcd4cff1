"""Surprisal: does the explanation, put before a window, make the window's tokens less
surprising to a scorer language model, and more so for activating windows than for contrast
windows? Per test window: the mean per-token loss (negative log-likelihood, nats) of the
window's text after the neutral prefix (``surprisal_neutral.txt``) and after the explanation
prefix (``surprisal_explained.txt``); ``drop`` = neutral - explained. The score is the AUROC
of the drop for activating (positive) vs contrast windows, with the mean drop of each.

Backends (``score.surprisal.backend``):
- ``hf``: a local Hugging Face causal LM (``score.surprisal.model``; default the bundled demo
  LM). The explanation prefix is run once per latent and its KV cache reused for all the
  latent's windows (surprisal_lm.py); neutral-prefix losses are remembered per window.
- ``llm``: completion requests with ``prompt_logprobs`` through the LLM layer (in-process
  vLLM, or a vLLM server's completions API): one request per (prefix, window); the shared
  prefix is left to vLLM's prefix cache, the neutral requests to the response cache.

The window's text (its token strings joined) is re-tokenized by the scorer model's
tokenizer, which may differ from the subject's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from typing import Any

import numpy as np
import polars as pl

from autointerp import prompts
from autointerp.llm.client import LLMClient
from autointerp.llm.types import LLMRequest, LLMResponse, SamplingParams, TokenLogprob
from autointerp.runner.examples import LatentExamples
from autointerp.scorers.base import (
    KEY_SCHEMA,
    WINDOW_SCHEMA,
    ScoreContext,
    Scorer,
    ScoreResult,
    Tally,
)
from autointerp.scorers.metrics import binary_metrics, mean_ci
from autointerp.scorers.simulation import token_starts
from autointerp.scorers.surprisal_lm import WindowLoss, get_lm

DEMO_LM = "demo-lm"  # how the bundled demo LM is named in the model column and config hash


def neutral_prefix() -> str:
    return prompts.text("surprisal_neutral") + "\n"


def explained_prefix(explanation: str) -> str:
    return prompts.render("surprisal_explained", explanation=explanation) + "\n"


def window_text(row: dict[str, Any]) -> str:
    return "".join(row["strings"])


def window_loss(response: LLMResponse, prompt: str, prefix_len: int) -> WindowLoss:
    """Mean NLL of the prompt tokens that start at or after ``prefix_len`` (the window's; a
    token straddling the boundary belongs to the prefix), from prompt logprobs."""
    if not response.ok:
        return WindowLoss(math.nan, 0, response.error)
    positions: list[TokenLogprob] | None = response.prompt_logprobs
    if not positions:
        return WindowLoss(math.nan, 0, "backend returned no prompt logprobs")
    starts = token_starts(prompt, positions)
    first = next((i for i, s in enumerate(starts) if s >= prefix_len), None)
    if first is None:
        return WindowLoss(math.nan, 0, "the window's tokens were not found in the prompt")
    values = [p.logprob for p in positions[first:]]
    if any(v is None for v in values):
        return WindowLoss(math.nan, len(values), "a window token has no logprob")
    return WindowLoss(-float(np.mean(values)), len(values))


class SurprisalScorer(Scorer):
    name = "surprisal"
    example_schema = {
        **KEY_SCHEMA,
        **WINDOW_SCHEMA,
        "truth": pl.Boolean(),
        "n_tokens": pl.Int32(),
        "loss_neutral": pl.Float64(),
        "loss_explained": pl.Float64(),
        "drop": pl.Float64(),
        "error": pl.String(),
    }

    def __init__(self, ctx: ScoreContext) -> None:
        cfg = ctx.config.surprisal
        if cfg.backend == "hf":  # the scores depend on the scorer LM, not on llm.model
            ctx = dataclasses.replace(ctx, llm_model=f"hf:{cfg.model or DEMO_LM}")
        super().__init__(ctx)

    def empty_metrics(self) -> dict[str, float]:
        empty = binary_metrics(np.zeros(0, bool), np.zeros(0, bool))
        keys = [
            *empty,
            *(f"drop_{k}{s}" for k in ("activating", "contrast") for s in ("", "_lo", "_hi")),
        ]
        return {k: float("nan") for k in keys}

    async def _hf(self, explanation: str, texts: list[str]) -> tuple[list[WindowLoss], ...]:
        from autointerp.config import DEMO_MODEL

        cfg = self.config.surprisal
        lm = await asyncio.to_thread(
            get_lm, cfg.model or DEMO_MODEL, cfg.device, cfg.dtype, cfg.batch_size
        )
        neutral = await asyncio.to_thread(lm.neutral_losses, neutral_prefix(), texts)
        explained = await asyncio.to_thread(
            lm.explained_losses, explained_prefix(explanation), texts
        )
        return neutral, explained

    async def _llm(
        self, explanation: str, texts: list[str], llm: LLMClient, tally: Tally, tags: dict
    ) -> tuple[list[WindowLoss], ...]:
        out = []
        for prefix in (neutral_prefix(), explained_prefix(explanation)):
            reqs = [
                LLMRequest(
                    prompt=prefix + t,
                    sampling=SamplingParams(temperature=0.0, max_tokens=1),
                    prompt_logprobs=0,
                    tags=tags,
                )
                for t in texts
            ]
            responses = await asyncio.gather(*(llm.generate(r) for r in reqs))
            for r in responses:
                tally.add(r)
            out.append(
                [
                    window_loss(resp, req.prompt or "", len(prefix))
                    for req, resp in zip(reqs, responses, strict=True)
                ]
            )
        return tuple(out)

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        rows = ex.windows(split)
        if not rows:
            return ScoreResult(status="skipped", error=f"no {split} windows")
        texts = [window_text(r) for r in rows]
        tally = Tally()
        if self.config.surprisal.backend == "hf":
            neutral, explained = await self._hf(explanation, texts)
        else:
            tags = {"stage": f"score:{self.name}", "latent": f"{ex.hookpoint}:{ex.latent}"}
            neutral, explained = await self._llm(explanation, texts, llm, tally, tags)
        return self._result(rows, neutral, explained, tally, split)

    def _result(self, rows, neutral, explained, tally, split) -> ScoreResult:
        truth = np.array([r["kind"] == "activating" for r in rows], dtype=bool)
        drop = np.array([a.loss - b.loss for a, b in zip(neutral, explained, strict=True)])
        ok = np.isfinite(drop)
        metrics = binary_metrics(
            truth[ok], drop[ok] > 0, drop[ok], n_boot=self.config.n_boot, seed=self.ctx.seed
        )
        for name, sel in (("activating", truth), ("contrast", ~truth)):
            mean, lo, hi = mean_ci(drop[ok & sel], n_boot=self.config.n_boot, seed=self.ctx.seed)
            metrics.update({f"drop_{name}": mean, f"drop_{name}_lo": lo, f"drop_{name}_hi": hi})
        examples = []
        for i, r in enumerate(rows):
            err = neutral[i].error or explained[i].error
            examples.append(
                {
                    "split": split,
                    "kind": r["kind"],
                    "sampler": r["sampler"],
                    "quantile": r["quantile"],
                    "seq_id": r["seq_id"],
                    "start": r["start"],
                    "truth": bool(truth[i]),
                    "n_tokens": explained[i].n_tokens or neutral[i].n_tokens,
                    "loss_neutral": _num(neutral[i].loss),
                    "loss_explained": _num(explained[i].loss),
                    "drop": _num(drop[i]),
                    "error": err if not ok[i] else None,
                }
            )
        result = ScoreResult(
            metrics=metrics,
            examples=examples,
            n_examples=int(ok.sum()),
            n_lost=int((~ok).sum()),
            tally=tally,
        )
        if not ok.any():
            result.status = "failed"
            first = next((e["error"] for e in examples if e["error"]), "no loss")
            result.error = f"every surprisal window failed: {first}"
        return result


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
