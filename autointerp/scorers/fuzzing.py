"""Fuzzing: does the judge, given the explanation, tell correctly highlighted windows from
wrongly highlighted ones? Shown: activating windows highlighted where the latent fires
(truth 1); activating windows whose highlights are moved to tokens where it is silent
(truth 0); contrast windows with highlights (truth 0).

Nothing but the explanation may tell the three apart (the shortcut audit, scorers/audit.py,
checks it): a wrong or contrast window borrows the highlight mask of another activating window
of the same latent (same count, same places, so the same distribution of positions and run
lengths as the right highlights); a wrong window takes the first borrowed mask, in a seeded
order, that falls on silent tokens only, and falls back to random silent tokens only when no
mask fits."""

from __future__ import annotations

from typing import Any

import numpy as np

from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.scorers.base import seeded_rng, shown_columns
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


def borrowed_wrong_mask(
    acts: np.ndarray, own: int, donors: list[np.ndarray], rng: np.random.Generator
) -> np.ndarray | None:
    """The mask of another window (``donors[j]``, ``j != own``, in a seeded order) that
    highlights only tokens where this window is silent; else random silent tokens as many as
    the window's own highlights; None when neither is possible."""
    silent = acts <= 0
    for j in rng.permutation(len(donors)).tolist():
        d = donors[j]
        if j != own and len(d) == len(acts) and d.any() and silent[d].all():
            return d.copy()
    return wrong_mask(acts, int(donors[own].sum()), rng)


def borrowed_mask(length: int, donors: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """A random donor's mask for a window of ``length`` tokens (random places, same count,
    when the lengths differ; one random token without donors)."""
    if not donors:
        mask = np.zeros(length, dtype=bool)
        mask[int(rng.integers(length))] = True
        return mask
    d = donors[int(rng.integers(len(donors)))]
    if len(d) == length:
        return d.copy()
    mask = np.zeros(length, dtype=bool)
    mask[rng.choice(length, size=min(length, max(1, int(d.sum()))), replace=False)] = True
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
        right = [highlight_mask(r["activations_norm"], thr) for r in act]
        donors = [m for m in right if m.any()]
        out: list[Item] = []
        for i, r in enumerate(act):
            mask, variant = right[i], "correct"
            if i in wrong:
                moved = borrowed_wrong_mask(np.asarray(r["activations"]), i, right, rng)
                if moved is not None:
                    mask, variant = moved, "wrong"
            out.append(self._item(ex, mask, variant == "correct", r, split, variant))
        for r in con:
            mask = borrowed_mask(len(r["strings"]), donors, rng)
            out.append(self._item(ex, mask, False, r, split, "contrast"))
        return out

    @staticmethod
    def _item(ex, mask, truth, r, split, variant) -> Item:
        strings = r["strings"]
        return Item(
            text=highlight(strings, mask),
            tokens=strings,
            truth=truth,
            meta={**window_meta(r, split, variant), **shown_columns(r, ex.vocab, mask)},
            highlighted=mask.astype(int).tolist(),
        )

    def task_example(self, item: Item) -> Any:
        return {"tokens": item.tokens, "highlighted": item.highlighted}
