"""Detection: does the judge, given the explanation, tell activating windows from contrast
windows? Windows are shown plain (no highlighting), activating and contrast mixed."""

from __future__ import annotations

import numpy as np

from autointerp.llm.client import LLMClient
from autointerp.runner.examples import LatentExamples
from autointerp.scorers.base import Scorer, ScoreResult, seeded_rng
from autointerp.scorers.judge import EXAMPLE_SCHEMA, Item, judge, request, window_meta
from autointerp.scorers.metrics import binary_metrics


class DetectionScorer(Scorer):
    name = "detection"
    example_schema = EXAMPLE_SCHEMA

    def items(self, ex: LatentExamples, split: str) -> list[Item]:
        out = []
        for r in ex.windows(split):
            strings = r["strings"]
            out.append(
                Item(
                    text="".join(strings),
                    tokens=strings,
                    truth=r["kind"] == "activating",
                    meta=window_meta(r, split),
                )
            )
        return out

    def empty_metrics(self) -> dict[str, float]:
        empty = binary_metrics(np.zeros(0, bool), np.zeros(0, bool))
        return {k: float("nan") for k in empty}

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        items = self.items(ex, split)
        if not items:
            return ScoreResult(status="skipped", error=f"no {split} windows")
        cfg = self.config.detection
        tags = {"stage": f"score:{self.name}", "latent": f"{ex.hookpoint}:{ex.latent}"}

        def build(chunk: list[Item]):
            task = {
                "kind": "detect",
                "explanation": explanation,
                "examples": [it.tokens for it in chunk],
            }
            return request(
                "detection_system",
                "detection_user",
                explanation,
                chunk,
                task,
                cfg.max_tokens,
                cfg.logprobs,
                tags,
            )

        return await judge(
            self.name,
            items,
            explanation,
            llm,
            per_prompt=cfg.examples_per_prompt,
            rng=seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, self.name, split),
            build=build,
            n_boot=self.config.n_boot,
            seed=self.ctx.seed,
        )
