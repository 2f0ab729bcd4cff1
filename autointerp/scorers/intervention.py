"""Intervention: does the explanation predict what the latent DOES to the model's output?

The pre-pass (``prepare``, scorers/intervention_data.py) calibrates each latent's steering
strength to a target KL on held-out test prompts and samples short completions clean and
steered. Two scores per latent:

- surprisal: the explanation's mean per-token loss under a scorer LM after
  ``intervention_surprisal.txt`` filled with the clean completion, minus after the steered
  one (``drop``; > 0: the steered text makes the explanation more likely); the score is the
  mean drop divided by the achieved KL (chance level 0). Local HF model (``hf``) or the LLM
  layer's prompt logprobs (``llm``).
- judge: the judge sees the explanation and three sets of steered completions (this latent's
  and two other latents', seeded) and picks the one it explains; accuracy, chance 1/3.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from autointerp import prompts
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, SamplingParams
from autointerp.runner.examples import LatentExamples
from autointerp.scorers.base import KEY_SCHEMA, ScoreContext, Scorer, ScoreResult, Tally, seeded_rng
from autointerp.scorers.metrics import accuracy_metrics, mean_ci
from autointerp.scorers.surprisal import window_loss
from autointerp.scorers.surprisal_lm import get_lm

CHOICE_SCHEMA = {
    "type": "object",
    "properties": {"choice": {"type": "integer", "minimum": 1, "maximum": 3}},
    "required": ["choice"],
}

# the metric columns of every row, scored or not (``score`` fills exactly these)
METRICS = (
    *("alpha", "kl", "kl_target", "n_prompts", "n_forward"),
    *(f"surprisal_{k}" for k in ("drop", "score", "score_lo", "score_hi", "score_chance")),
    *(f"judge_{k}" for k in ("accuracy", "accuracy_lo", "accuracy_hi", "accuracy_chance")),
)


def passage_prefix(passage: str) -> str:
    return prompts.render("intervention_surprisal", passage=passage)


@torch.inference_mode()
def hf_losses(lm: Any, prefixes: list[str], explanation: str) -> list[float]:
    """Mean loss (nats/token) of `` explanation`` after each prefix, in batches."""
    tok = lm.tokenizer
    tail = tok(" " + explanation, add_special_tokens=False)["input_ids"]
    out: list[float] = []
    for s in range(0, len(prefixes), lm.batch_size):
        heads = [tok(lm.clean(p))["input_ids"] for p in prefixes[s : s + lm.batch_size]]
        seqs = [h + tail for h in heads]
        n = max(len(q) for q in seqs)
        ids = torch.zeros(len(seqs), n, dtype=torch.long)
        for i, q in enumerate(seqs):
            ids[i, : len(q)] = torch.tensor(q)
        logits = lm.model(ids.to(lm.device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        for i, h in enumerate(heads):
            pos = torch.arange(len(h) - 1, len(h) - 1 + len(tail), device=lm.device)
            target = ids[i, len(h) : len(h) + len(tail)].to(lm.device)
            out.append(float(-logp[i, pos, target].mean()))
    return out


class InterventionScorer(Scorer):
    name = "intervention"
    example_schema = {
        **KEY_SCHEMA,
        "task": pl.String(),
        "index": pl.Int32(),
        "prompt": pl.String(),
        "clean": pl.String(),
        "steered": pl.String(),
        "loss_clean": pl.Float64(),
        "loss_steered": pl.Float64(),
        "drop": pl.Float64(),
        "distractors": pl.List(pl.Int32()),
        "answer": pl.Int8(),
        "choice": pl.Int8(),
        "correct": pl.Boolean(),
        "error": pl.String(),
    }

    def __init__(self, ctx: ScoreContext) -> None:
        super().__init__(ctx)
        self._data: dict[str, dict[int, dict[str, Any]]] = {}
        self._orders: dict[str, dict[int, list[int]]] = {}

    def empty_metrics(self) -> dict[str, float]:
        return dict.fromkeys(METRICS, float("nan"))

    def prepare(self, run_dir: Path, config: Any, hookpoint: str, latents, explanations) -> None:
        """Steer ``latents`` and, for the judge, the distractors each of them needs: the first
        ``2 x judge_trials`` usable latents of its own seeded order (:func:`distractor_order`),
        prepared too when they are not in this batch, so that a latent's distractors never
        depend on which latents are scored with it."""
        from autointerp.runner.examples import all_latents
        from autointerp.scorers.intervention_data import prepare_hookpoint

        seed, cfg = self.ctx.seed, self.config.intervention
        data = prepare_hookpoint(Path(run_dir), hookpoint, cfg, list(latents), seed)
        pool = [int(x) for x in all_latents(Path(run_dir), hookpoint)]
        orders = {int(lat): distractor_order(pool, int(lat), seed, hookpoint) for lat in latents}
        self._orders[hookpoint] = orders
        need = 2 * cfg.judge_trials
        while True:
            more = set()
            for order in orders.values():
                more.update(_walk(order, data, need)[1])
            if not more:
                break
            data = prepare_hookpoint(Path(run_dir), hookpoint, cfg, sorted(more), seed)
        self._data[hookpoint] = data

    async def _surprisal(
        self, texts: list[str], explanation: str, llm: LLMClient, tally: Tally, tags: dict
    ) -> tuple[list[float], list[str | None]]:
        cfg = self.config.intervention
        pre = [passage_prefix(t) for t in texts]
        if cfg.surprisal_backend == "hf":
            from autointerp.config import DEMO_MODEL

            lm = await asyncio.to_thread(
                get_lm, cfg.surprisal_model or DEMO_MODEL, cfg.device, cfg.dtype, 32
            )
            losses = await asyncio.to_thread(hf_losses, lm, pre, explanation)
            return losses, [None] * len(losses)
        reqs = [
            LLMRequest(
                prompt=f"{p} {explanation}",
                sampling=SamplingParams(temperature=0.0, max_tokens=1),
                prompt_logprobs=0,
                tags=tags,
            )
            for p in pre
        ]
        resps = await asyncio.gather(*(llm.generate(r) for r in reqs))
        out = []
        for p, r, q in zip(pre, resps, reqs, strict=True):
            tally.add(r)
            out.append(window_loss(r, q.prompt or "", len(p)))
        return [w.loss for w in out], [w.error for w in out]

    def _judge_request(self, explanation: str, sets: list[list[str]], tags: dict) -> LLMRequest:
        blocks = []
        for i, s in enumerate(sets, 1):
            lines = "\n".join(f"- {json.dumps(t, ensure_ascii=False)}" for t in s)
            blocks.append(f"Set {i}:\n{lines}")
        user = prompts.render(
            "intervention_judge_user", explanation=explanation, sets="\n\n".join(blocks)
        )
        return LLMRequest(
            messages=[
                ChatMessage(role="system", content=prompts.text("intervention_judge_system")),
                ChatMessage(role="user", content=user),
            ],
            sampling=SamplingParams(
                temperature=0.0, max_tokens=self.config.intervention.judge_max_tokens
            ),
            json_schema=CHOICE_SCHEMA,
            task={"kind": "steer_judge", "explanation": explanation, "sets": sets},
            tags=tags,
            check=lambda r: _choice(r)[1],
        )

    async def _judge(self, ex: LatentExamples, explanation: str, data: dict, llm, tally, tags):
        trials = self.config.intervention.judge_trials
        order = self._orders.get(ex.hookpoint, {}).get(ex.latent, [])
        pool, _ = _walk(order, self._data[ex.hookpoint], 2 * trials)
        rows = []
        if len(pool) < 2:
            return rows
        reqs, meta = [], []
        for t in range(trials):
            rng = seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, self.name, t)
            # trial t: the next two of the latent's own distractors (fixed by seed and latent)
            others = [pool[(2 * t) % len(pool)], pool[(2 * t + 1) % len(pool)]]
            answer = int(rng.integers(0, 3))
            sets = [self._data[ex.hookpoint][o]["steered"] for o in others]
            sets.insert(answer, data["steered"])
            reqs.append(self._judge_request(explanation, sets, tags))
            meta.append((others, answer + 1))
        resps = await asyncio.gather(*(llm.generate(r) for r in reqs))
        for t, (r, (others, answer)) in enumerate(zip(resps, meta, strict=True)):
            tally.add(r)
            choice, err = _choice(r)
            rows.append(
                {
                    "task": "judge",
                    "index": t,
                    "distractors": others,
                    "answer": answer,
                    "choice": choice,
                    "correct": None if choice is None else choice == answer,
                    "error": err,
                }
            )
        return rows

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        data = self._data.get(ex.hookpoint, {}).get(ex.latent)
        if data is None:
            return ScoreResult(status="failed", error="latent not prepared (no steering data)")
        if not data["steered"] or not math.isfinite(data["alpha"] or math.nan):
            return ScoreResult(status="skipped", error="no held-out test prompt before a firing")
        tally = Tally()
        tags = {"stage": f"score:{self.name}", "latent": f"{ex.hookpoint}:{ex.latent}"}
        clean, steered = data["clean"], data["steered"]
        (lc, ec), (ls, es) = await asyncio.gather(
            self._surprisal(clean, explanation, llm, tally, tags),
            self._surprisal(steered, explanation, llm, tally, tags),
        )
        examples: list[dict[str, Any]] = []
        drops = np.array([a - b for a, b in zip(lc, ls, strict=True)], dtype=np.float64)
        for i in range(len(clean)):
            ok = math.isfinite(drops[i])
            examples.append(
                {
                    "task": "surprisal",
                    "index": i,
                    "prompt": data["prompts"][i],
                    "clean": clean[i],
                    "steered": steered[i],
                    "loss_clean": _num(lc[i]),
                    "loss_steered": _num(ls[i]),
                    "drop": _num(drops[i]),
                    "error": None if ok else (ec[i] or es[i]),
                }
            )
        judged = await self._judge(ex, explanation, data, llm, tally, tags)
        examples += judged
        kl = float(data["kl"])
        nb, seed = self.config.n_boot, self.ctx.seed
        drop, _, _ = mean_ci(drops, n_boot=nb, seed=seed)
        score, lo, hi = mean_ci(drops / kl, n_boot=nb, seed=seed)
        correct = np.array([r["correct"] for r in judged if r["correct"] is not None], dtype=bool)
        acc = accuracy_metrics(correct, 3, n_boot=nb, seed=seed)
        metrics = {
            "alpha": float(data["alpha"]),
            "kl": kl,
            "kl_target": self.config.intervention.target_kl,
            "n_prompts": float(len(clean)),
            "n_forward": float(data["n_forward"]),
            "surprisal_drop": drop,
            "surprisal_score": score,
            "surprisal_score_lo": lo,
            "surprisal_score_hi": hi,
            "surprisal_score_chance": 0.0,
            "judge_accuracy": acc["accuracy"],
            "judge_accuracy_lo": acc["accuracy_lo"],
            "judge_accuracy_hi": acc["accuracy_hi"],
            "judge_accuracy_chance": 1.0 / 3.0,
        }
        n_ok = int(np.isfinite(drops).sum()) + len(correct)
        n_lost = len(examples) - n_ok
        res = ScoreResult(
            metrics=metrics, examples=examples, n_examples=n_ok, n_lost=n_lost, tally=tally
        )
        if n_ok == 0:
            res.status, res.error = "failed", "every surprisal and judge answer failed"
        return res


def distractor_order(pool: list[int], latent: int, seed: int, hookpoint: str) -> list[int]:
    """The latents that may serve as ``latent``'s judge distractors, in a seeded order fixed by
    (seed, hookpoint, latent) over ``pool`` (every latent with examples in the hookpoint, not
    the batch being scored)."""
    others = sorted(set(pool) - {latent})
    rng = seeded_rng(seed, hookpoint, latent, "intervention-distractors")
    return [others[int(i)] for i in rng.permutation(len(others))]


def _walk(
    order: list[int], data: dict[int, dict[str, Any]], need: int
) -> tuple[list[int], list[int]]:
    """(the first ``need`` usable latents of ``order`` that are prepared, the latents of
    ``order`` still to prepare before those can be known). Usable: steered completions."""
    usable: list[int] = []
    missing: list[int] = []
    for lat in order:
        if len(usable) + len(missing) >= need:
            break
        if lat not in data:
            missing.append(lat)
        elif data[lat]["steered"]:
            usable.append(lat)
    return usable, missing


def _choice(r: Any) -> tuple[int | None, str | None]:
    if not r.ok:
        return None, r.error
    parsed = r.parsed
    if parsed is None:
        try:
            parsed = json.loads(r.text)
        except (TypeError, json.JSONDecodeError):
            return None, "the judge's answer is not JSON"
    c = parsed.get("choice") if isinstance(parsed, dict) else None
    if not isinstance(c, int) or not 1 <= c <= 3:
        return None, f"bad choice {c!r}"
    return c, None


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
