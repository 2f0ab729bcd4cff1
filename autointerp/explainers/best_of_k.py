"""Best-of-k: k candidate explanations sampled at temperature > 0; the one kept is the best
by detection on the ``selection`` split, so the final ``test`` score is not the score that
chose it. Every candidate is a row, with its selection score."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from autointerp.explainers.base import Explainer, row
from autointerp.explainers.parse import parse_explanation
from autointerp.explainers.prompt import explain_request
from autointerp.llm.client import LLMClient
from autointerp.runner.examples import LatentExamples

SELECTION_METRIC = "balanced_accuracy"


class BestOfKExplainer(Explainer):
    name = "best-of-k"
    splits = ("train", "selection")  # selection only to pick among candidates, never test

    async def explain(self, ex: LatentExamples, llm: LLMClient) -> list[dict[str, Any]]:
        from autointerp.scorers.base import ScoreContext
        from autointerp.scorers.detection import DetectionScorer

        cfg = self.config
        contrastive = cfg.k_base == "contrastive"
        requests = [
            explain_request(
                ex,
                cfg,
                contrastive,
                temperature=cfg.k_temperature,
                seed=self.ctx.seed * 1000 + c,
                candidate=c,
            )
            for c in range(cfg.k)
        ]
        responses = await asyncio.gather(*(llm.generate(r) for r in requests))
        parsed = [parse_explanation(r) for r in responses]
        sc = self.ctx.score_config
        scorer = DetectionScorer(
            ScoreContext(config=sc, seed=self.ctx.seed, llm_model=llm.backend.model, backend="")
        )
        # Identical candidates are scored once (the response cache would dedupe them anyway).
        unique = {text for text, err in parsed if err is None}
        scored = dict(
            zip(
                unique,
                await asyncio.gather(
                    *(scorer.score(ex, t, llm, split="selection") for t in unique)
                ),
                strict=True,
            )
        )
        values = []
        for text, err in parsed:
            v = scored[text].metrics.get(SELECTION_METRIC, math.nan) if err is None else math.nan
            values.append(v)
        ranked = [i for i in range(cfg.k) if parsed[i][1] is None and not math.isnan(values[i])]
        best = max(ranked, key=lambda i: (values[i], -i)) if ranked else None
        if best is None:  # no candidate could be judged: keep the first parsed, else the first
            best = next((i for i in range(cfg.k) if parsed[i][1] is None), 0)
        return [
            row(
                ex,
                self.name,
                self.ctx,
                text=parsed[c][0],
                error=parsed[c][1],
                response=responses[c],
                candidate=c,
                selected=c == best,
                selection_score=None if math.isnan(values[c]) else values[c],
            )
            for c in range(cfg.k)
        ]
