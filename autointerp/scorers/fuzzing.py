"""Fuzzing: does the judge, given the explanation, tell correctly highlighted windows from
wrongly highlighted ones? Shown: activating windows highlighted where the latent fires
(truth 1); activating windows with the same number of highlights moved to tokens where it is
silent (truth 0); contrast windows with as many random highlights as a typical activating
window (truth 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.scorers.base import seeded_rng
from autointerp.scorers.judge import BinaryJudgeScorer, Item, window_meta
from autointerp.text import highlight


def wrong_mask(acts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` highlights on tokens where the latent is silent (None when too few are)."""
    silent = np.flatnonzero(acts <= 0)
    if k < 1 or len(silent) < k:
        return None
    mask = np.zeros(len(acts), dtype=bool)
    mask[rng.choice(silent, size=k, replace=False)] = True
    return mask


class FuzzingScorer(BinaryJudgeScorer):
    name = "fuzzing"
    task_kind = "fuzz"

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

    def task_example(self, item: Item) -> Any:
        return {"tokens": item.tokens, "highlighted": item.highlighted}
