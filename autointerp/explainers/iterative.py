"""Iterative: refine an explanation from the judge's mistakes.

Part of the latent's ``train`` windows is held back (seeded); the explainer sees the rest.
Round 0 is the ``default`` prompt. Each round's explanation is scored by detection on the
held-back train windows; the judge's false negatives and false positives (up to
``iter_max_false_negatives`` / ``iter_max_false_positives``) are shown to the explainer with
its previous explanation, and it writes a revision. After at most ``iter_rounds`` rounds the
round kept is the best by detection on the ``selection`` split (like best-of-k), so revising
never reads ``selection`` windows and nothing reads ``test``. Every round is a row.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np

from autointerp import prompts
from autointerp.explainers.base import Explainer, row
from autointerp.explainers.parse import parse_explanation
from autointerp.explainers.prompt import activating_windows, around_peak, explain_request
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse
from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.text import excerpts, highlight

SELECTION_METRIC = "balanced_accuracy"
HELDOUT = "heldout"  # the split name the held-back train windows are scored under


class _Tagged:
    """The client with extra tags on every request (the round's cost stays attributable)."""

    def __init__(self, llm: LLMClient, tags: dict[str, str | int]) -> None:
        self.llm, self.tags, self.backend = llm, tags, llm.backend

    async def generate(self, request: LLMRequest) -> LLMResponse:
        return await self.llm.generate(
            request.model_copy(update={"tags": {**request.tags, **self.tags}})
        )


def split_train(
    ex: LatentExamples, holdout: int, rng: np.random.Generator
) -> tuple[LatentExamples, LatentExamples]:
    """(shown, held): the train windows the explainer sees, and the held-back ones relabelled
    to split ``heldout`` (half of ``holdout`` activating, half contrast, at most half of each
    kind). Neither holds any other split's windows."""
    act = ex.windows("train", "activating")
    con = ex.windows("train", "contrast")
    held_ids: set[int] = set()
    for rows, n in ((act, min(math.ceil(holdout / 2), len(act) // 2)), (con, holdout // 2)):
        n = min(n, len(rows) // 2)
        held_ids |= {id(rows[i]) for i in rng.choice(len(rows), n, replace=False)}
    train = act + con
    shown = [r for r in train if id(r) not in held_ids]
    held = [{**r, "split": HELDOUT} for r in train if id(r) in held_ids]
    return (
        LatentExamples(ex.hookpoint, ex.latent, shown, ex.vocab),
        LatentExamples(ex.hookpoint, ex.latent, held, ex.vocab),
    )


def mistakes(
    held: LatentExamples, examples: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(false negatives, false positives): held-back windows the judge got wrong (the
    detection scorer's example rows are in window order)."""
    windows = held.windows(HELDOUT)
    fn, fp = [], []
    for w, ex in zip(windows, examples, strict=True):
        assert (w["seq_id"], w["start"]) == (ex["seq_id"], ex["start"])
        if ex["prediction"] is None:
            continue
        if ex["truth"] and not ex["prediction"]:
            fn.append(w)
        elif not ex["truth"] and ex["prediction"]:
            fp.append(w)
    fn.sort(key=lambda r: (-r["max_activation"], r["seq_id"]))
    return fn, fp


def revise_request(
    shown: LatentExamples,
    explainer: Explainer,
    previous: str,
    fn: list[dict[str, Any]],
    fp: list[dict[str, Any]],
    round_: int,
) -> LLMRequest:
    """The default prompt with its user turn replaced: previous explanation, the shown
    windows, then the missed (highlighted) and wrongly picked (plain) held-back windows."""
    cfg = explainer.config
    fn, fp = fn[: cfg.iter_max_false_negatives], fp[: cfg.iter_max_false_positives]
    base = explain_request(shown, cfg, False, candidate=round_)

    def marked(r: dict[str, Any]) -> str:
        mask = highlight_mask(r["activations_norm"], cfg.highlight_threshold)
        return highlight(r["strings"], mask)

    act = [
        around_peak(r, cfg.context_before, cfg.context_after)
        for r in activating_windows(shown, cfg.n_examples)
    ]
    missed = (
        "\n\nIt missed these excerpts, where the feature is active:\n\n"
        + excerpts([marked(r) for r in fn])
        if fn
        else "\n\nIt missed no excerpt where the feature is active."
    )
    wrong = (
        "\n\nIt picked these excerpts, where the feature is silent:\n\n"
        + excerpts(["".join(r["strings"]) for r in fp])
        if fp
        else "\n\nIt picked no excerpt where the feature is silent."
    )
    user = prompts.render(
        "explain_revise_user",
        explanation=previous,
        examples=excerpts([marked(r) for r in act]),
        false_negatives=missed,
        false_positives=wrong,
    )
    task = dict(base.task or {})
    task["examples"] = list(task.get("examples", [])) + [
        {"tokens": r["strings"], "activations": np.asarray(r["activations"]).tolist()} for r in fn
    ]
    if fp:
        task["contrast"] = [r["strings"] for r in fp]
    return base.model_copy(
        update={
            "messages": [*base.messages[:-1], ChatMessage(role="user", content=user)],
            "task": task,
            "tags": {**base.tags, "round": round_},
        }
    )


class IterativeExplainer(Explainer):
    name = "iterative"
    splits = ("train", "selection")  # selection only to pick the round, never test

    async def explain(self, ex: LatentExamples, llm: LLMClient) -> list[dict[str, Any]]:
        from autointerp.scorers.base import ScoreContext, Tally, seeded_rng
        from autointerp.scorers.detection import DetectionScorer

        cfg, seed = self.config, self.ctx.seed
        scorer = DetectionScorer(
            ScoreContext(config=self.ctx.score_config, seed=seed, llm_model="", backend="")
        )
        shown, held = split_train(
            ex, cfg.iter_holdout, seeded_rng(seed, ex.hookpoint, ex.latent, "iterative-holdout")
        )
        rounds: list[dict[str, Any]] = []  # text, error, response, train score, tally
        request = explain_request(shown, cfg, False, candidate=0)
        request = request.model_copy(update={"tags": {**request.tags, "round": 0}})
        for r in range(cfg.iter_rounds):
            response = await llm.generate(request)
            text, error = parse_explanation(response)
            rnd: dict[str, Any] = {"text": text, "error": error, "response": response}
            rnd["tally"], rnd["train"] = Tally(), None
            rounds.append(rnd)
            same = next((p for p in rounds[:-1] if p["text"] == text), None)
            if error is not None or same is not None:  # nothing to revise, or converged
                rnd["train"] = same["train"] if same is not None else None
                break
            res = await scorer.score(
                held, text, _Tagged(llm, {"stage": "explain", "round": r}), split=HELDOUT
            )
            rnd["tally"] = res.tally
            if res.status != "ok":
                break
            rnd["train"] = res.metrics.get(SELECTION_METRIC, math.nan)
            fn, fp = mistakes(held, res.examples)
            if not fn and not fp:
                break
            request = revise_request(shown, self, text, fn, fp, r + 1)
        texts = list(dict.fromkeys(p["text"] for p in rounds if p["error"] is None))
        results = await asyncio.gather(
            *(
                scorer.score(
                    ex, t, _Tagged(llm, {"stage": "explain", "round": i}), split="selection"
                )
                for i, t in enumerate(texts)
            )
        )
        selection = {t: res for t, res in zip(texts, results, strict=True)}
        values = [
            selection[p["text"]].metrics.get(SELECTION_METRIC, math.nan)
            if p["error"] is None
            else math.nan
            for p in rounds
        ]
        ranked = [i for i, v in enumerate(values) if not math.isnan(v)]
        best = max(ranked, key=lambda i: (values[i], -i)) if ranked else None
        if best is None:
            best = next((i for i, p in enumerate(rounds) if p["error"] is None), 0)
        out = []
        charged: set[str] = set()
        for i, p in enumerate(rounds):
            tally = p["tally"]
            if p["error"] is None and p["text"] not in charged:  # selection cost: first round
                charged.add(p["text"])
                extra = selection[p["text"]].tally
            else:
                extra = Tally()
            rec = row(
                ex,
                self.name,
                self.ctx,
                text=p["text"],
                error=p["error"],
                response=p["response"],
                candidate=i,
                selected=i == best,
                selection_score=None if math.isnan(values[i]) else values[i],
                round=i,
                train_score=None if p["train"] is None or math.isnan(p["train"]) else p["train"],
            )
            for t in (tally, extra):  # the round's detection requests are part of its cost
                rec["prompt_tokens"] += t.prompt_tokens
                rec["completion_tokens"] += t.completion_tokens
                rec["cost_usd"] += t.cost_usd
                rec["latency_s"] += t.latency_s
            out.append(rec)
        return out
