"""Fuzzing: does the judge, given the explanation, tell correctly highlighted windows from
wrongly highlighted ones? Shown: activating windows highlighted where the latent fires
(truth 1); activating windows whose highlights are moved to tokens where it is silent
(truth 0); contrast windows with highlights (truth 0). The windows are shown plain, exactly as
detection shows them (the same batches: a prefix cache reuses them), and each window's marked
tokens are listed after them (``Marked:``, autointerp.text.marks).

Nothing but the explanation may tell the three apart (the shortcut audit, scorers/audit.py,
checks it): a wrong or contrast window borrows the highlight mask of another activating window
of the same latent (same count, same places, so the same distribution of positions and run
lengths as the right highlights); a wrong window takes the first borrowed mask, in a seeded
order, that falls on silent tokens only, and falls back to random silent tokens only when no
mask fits. Of the masks that fit, one with as many marks as the window's own is taken,
marking tokens as frequent in the cache as the right marks (``prepare`` reads the cache's
token counts), so neither the count nor the frequency of the marked tokens tells wrong from
right without the explanation."""

from __future__ import annotations

from typing import Any

import numpy as np

from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.scorers.base import seeded_rng, shown_columns
from autointerp.scorers.frequency import closest, mean_log_count, token_log_counts
from autointerp.scorers.judge import BinaryJudgeScorer, Item, marks_list, window_meta


def wrong_mask(acts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` highlights on tokens where the latent is silent (None when too few are)."""
    silent = np.flatnonzero(acts <= 0)
    if k < 1 or len(silent) < k:
        return None
    mask = np.zeros(len(acts), dtype=bool)
    mask[rng.choice(silent, size=k, replace=False)] = True
    return mask


def borrowed_wrong_mask(
    row: dict[str, Any],
    own: int,
    donors: list[np.ndarray],
    rng: np.random.Generator,
    log_counts: np.ndarray | None = None,
) -> np.ndarray | None:
    """Another window's mask (``donors[j]``, ``j != own``) that marks only tokens where this
    window is silent: of those with as many marks as the window's own (any, if none), the one
    whose marked tokens are as frequent as its own marked ones (seeded order on ties); else
    random silent tokens as many as its own marks; None when neither is possible."""
    acts = np.asarray(row["activations"])
    silent = acts <= 0
    own_mask = donors[own]
    fits = [
        donors[j]
        for j in rng.permutation(len(donors)).tolist()
        if j != own and len(donors[j]) == len(acts) and donors[j].any() and silent[donors[j]].all()
    ]
    same = [d for d in fits if d.sum() == own_mask.sum()] or fits
    if not same:
        return wrong_mask(acts, int(own_mask.sum()), rng)
    ids = np.asarray(row["tokens"])
    target = mean_log_count(log_counts, ids, own_mask) if log_counts is not None else 0.0
    return closest(ids, same, target, log_counts).copy()


def borrowed_mask(
    row: dict[str, Any],
    lenders: list[tuple[np.ndarray, float]],
    rng: np.random.Generator,
    log_counts: np.ndarray | None = None,
) -> np.ndarray:
    """Marks for a contrast window: a random lender's mask (``lenders``: masks of activating
    windows with the mean log count of their own marked tokens); with token counts, of the
    masks with as many marks, the one that marks tokens of this window as frequent as the
    lender's. Random places, same count, when the lengths differ; one random token without
    lenders."""
    length = len(row["strings"])
    if not lenders:
        mask = np.zeros(length, dtype=bool)
        mask[int(rng.integers(length))] = True
        return mask
    d, target = lenders[int(rng.integers(len(lenders)))]
    if len(d) != length:
        mask = np.zeros(length, dtype=bool)
        mask[rng.choice(length, size=min(length, max(1, int(d.sum()))), replace=False)] = True
        return mask
    order = rng.permutation(len(lenders)).tolist()
    same = [d] + [lenders[j][0] for j in order if lenders[j][0].sum() == d.sum()]
    same = [m for m in same if len(m) == length]
    return closest(np.asarray(row["tokens"]), same, target, log_counts).copy()


class FuzzingScorer(BinaryJudgeScorer):
    name = "fuzzing"
    task_kind = "fuzz"

    def prepare(self, run_dir, config, hookpoint, latents, explanations) -> None:
        """Token counts of the hookpoint's cache: wrong and contrast marks are matched to the
        right ones in how frequent the marked tokens are (none without a cache)."""
        self._log_counts = token_log_counts(run_dir, hookpoint)

    def items(self, ex: LatentExamples, split: str) -> list[Item]:
        rng = seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, self.name, split, "highlights")
        thr = self.config.highlight_threshold
        counts = getattr(self, "_log_counts", None)
        act = ex.windows(split, "activating")
        con = ex.windows(split, "contrast")
        n_wrong = round(self.config.fuzzing.wrong_fraction * len(act))
        wrong = set(rng.permutation(len(act))[:n_wrong].tolist()) if act else set()
        right = [highlight_mask(r["activations_norm"], thr) for r in act]
        lenders = [
            (m, mean_log_count(counts, r["tokens"], m) if counts is not None else 0.0)
            for r, m in zip(act, right, strict=True)
            if m.any()
        ]
        made: dict[int, Item] = {}
        for i, r in enumerate(act):
            mask, variant = right[i], "correct"
            if i in wrong:
                moved = borrowed_wrong_mask(r, i, right, rng, counts)
                if moved is not None:
                    mask, variant = moved, "wrong"
            made[id(r)] = self._item(ex, mask, variant == "correct", r, split, variant)
        for r in con:
            mask = borrowed_mask(r, lenders, rng, counts)
            made[id(r)] = self._item(ex, mask, False, r, split, "contrast")
        # detection's order (LatentExamples.windows): the same batches, the same prefixes
        return [made[id(r)] for r in ex.windows(split) if id(r) in made]

    @staticmethod
    def _item(ex, mask, truth, r, split, variant) -> Item:
        strings = r["strings"]
        return Item(
            text="".join(strings),
            tokens=strings,
            truth=truth,
            meta={**window_meta(r, split, variant), **shown_columns(r, ex.vocab, mask)},
            highlighted=mask.astype(int).tolist(),
        )

    def prompt_fields(self, chunk: list[Item]) -> dict[str, str]:
        return {"marks": marks_list(chunk)}

    def task_example(self, item: Item) -> Any:
        return {"tokens": item.tokens, "highlighted": item.highlighted}
