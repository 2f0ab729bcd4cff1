"""Fuzzing: does the judge, given the explanation, tell correctly highlighted windows from
wrongly highlighted ones? Shown: activating windows highlighted where the latent fires
(truth 1); activating windows with the same number of highlights moved to tokens where it is
silent (truth 0); contrast windows with as many random highlights as a typical activating
window (truth 0)."""

from __future__ import annotations

import numpy as np

from autointerp.llm.client import LLMClient
from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.scorers.base import Scorer, ScoreResult, seeded_rng
from autointerp.scorers.judge import EXAMPLE_SCHEMA, Item, judge, request, window_meta
from autointerp.scorers.metrics import binary_metrics
from autointerp.text import highlight


def wrong_mask(acts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` highlights on tokens where the latent is silent (None when too few are)."""
    silent = np.flatnonzero(acts <= 0)
    if k < 1 or len(silent) < k:
        return None
    mask = np.zeros(len(acts), dtype=bool)
    mask[rng.choice(silent, size=k, replace=False)] = True
    return mask


class FuzzingScorer(Scorer):
    name = "fuzzing"
    example_schema = EXAMPLE_SCHEMA

    def items(self, ex: LatentExamples, split: str) -> list[Item]:
        rng = seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, self.name, split, "highlights")
        thr = self.config.highlight_threshold
        act = ex.windows(split, "activating")
        con = ex.windows(split, "contrast")
        n_wrong = round(self.config.fuzzing.wrong_fraction * len(act))
        wrong = set(rng.permutation(len(act))[:n_wrong].tolist()) if act else set()
        out: list[Item] = []
        counts = []
        for i, r in enumerate(act):
            strings = r["strings"]
            right = highlight_mask(r["activations_norm"], thr)
            counts.append(int(right.sum()))
            mask, variant = right, "correct"
            if i in wrong:
                moved = wrong_mask(np.asarray(r["activations"]), int(right.sum()), rng)
                if moved is not None:
                    mask, variant = moved, "wrong"
            out.append(self._item(strings, mask, variant == "correct", r, split, variant))
        k = max(1, int(np.median(counts))) if counts else 1
        for r in con:
            strings = r["strings"]
            mask = np.zeros(len(strings), dtype=bool)
            mask[rng.choice(len(strings), size=min(k, len(strings)), replace=False)] = True
            out.append(self._item(strings, mask, False, r, split, "contrast"))
        return out

    @staticmethod
    def _item(strings, mask, truth, r, split, variant) -> Item:
        return Item(
            text=highlight(strings, mask),
            tokens=strings,
            truth=truth,
            meta=window_meta(r, split, variant),
            highlighted=mask.astype(int).tolist(),
        )

    def empty_metrics(self) -> dict[str, float]:
        empty = binary_metrics(np.zeros(0, bool), np.zeros(0, bool))
        return {k: float("nan") for k in empty}

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        items = self.items(ex, split)
        if not items:
            return ScoreResult(status="skipped", error=f"no {split} windows")
        cfg = self.config.fuzzing
        tags = {"stage": f"score:{self.name}", "latent": f"{ex.hookpoint}:{ex.latent}"}

        def build(chunk: list[Item]):
            task = {
                "kind": "fuzz",
                "explanation": explanation,
                "examples": [{"tokens": it.tokens, "highlighted": it.highlighted} for it in chunk],
            }
            return request(
                "fuzzing_system",
                "fuzzing_user",
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
