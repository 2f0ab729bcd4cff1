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
from autointerp.scorers.frequency import token_log_counts, window_log_counts
from autointerp.scorers.judge import BinaryJudgeScorer, Item, marks_list, window_meta


def wrong_mask(acts: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray | None:
    """``k`` highlights on tokens where the latent is silent (None when too few are)."""
    silent = np.flatnonzero(acts <= 0)
    if k < 1 or len(silent) < k:
        return None
    mask = np.zeros(len(acts), dtype=bool)
    mask[rng.choice(silent, size=k, replace=False)] = True
    return mask


class Marks:
    """The right highlight masks of a latent's activating windows and what the borrowing rules
    ask of each, computed once per latent: mark counts, lengths, the mean log count of the
    marked tokens (``counts``: each window's window_log_counts, None without token counts;
    or ``means`` given), and per window length a matrix of the masks of that length."""

    def __init__(
        self,
        masks: list[np.ndarray],
        counts: list[np.ndarray] | None,
        means: np.ndarray | None = None,
    ) -> None:
        self.masks = masks
        self.sums = np.array([int(m.sum()) for m in masks], dtype=np.int64)
        self.lens = np.array([len(m) for m in masks], dtype=np.int64)
        if means is None:  # frequency.mean_log_count of each window's marked tokens
            means = np.array(
                [
                    float(c[m].mean()) if c is not None and m.any() else 0.0
                    for c, m in zip(counts or [None] * len(masks), masks, strict=True)
                ]
            )
        self.means = means
        self._by_len: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def of_length(self, length: int) -> tuple[np.ndarray, np.ndarray]:
        """(indices of the masks of ``length`` tokens, their masks as a matrix)."""
        if length not in self._by_len:
            idx = np.flatnonzero(self.lens == length)
            mat = (
                np.stack([self.masks[i] for i in idx]).astype(bool)
                if len(idx)
                else np.zeros((0, length), dtype=bool)
            )
            self._by_len[length] = (idx, mat)
        return self._by_len[length]


def wrong_candidates(
    row: dict[str, Any], own: int, marks: Marks, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A wrong window's borrowing: ``(candidates, None)``, the indices of the other windows'
    masks (``marks.masks[j]``, ``j != own``) that mark only tokens where this window is silent,
    those with as many marks as its own first (any, if none), in a seeded order; or, when no
    mask fits, ``(None, mask)`` with random silent tokens as many as its own marks (mask None
    when there are too few). Of the candidates, the one whose marked tokens are as frequent
    as the window's own marked ones is taken (:func:`pick_closest`; the first without token
    counts)."""
    acts = np.asarray(row["activations"])
    n_own = int(marks.sums[own])
    order = rng.permutation(len(marks.masks))
    idx, mat = marks.of_length(len(acts))
    ok = np.zeros(len(marks.masks), dtype=bool)
    ok[idx] = ~(mat & (acts > 0)).any(axis=1)  # marks on silent tokens only
    ok &= marks.sums > 0
    ok[own] = False
    fits = order[ok[order]]
    same = fits[marks.sums[fits] == n_own]
    if not len(same):
        same = fits
    if not len(same):
        return None, wrong_mask(acts, n_own, rng)
    return same, None


def contrast_candidates(
    row: dict[str, Any], lenders: Marks, rng: np.random.Generator
) -> tuple[np.ndarray | None, np.ndarray | None, float]:
    """A contrast window's borrowing: ``(candidates, None, target)``, a random lender's mask
    (``lenders``: the masks of activating windows that mark something) first, then, in a
    seeded order, the other lenders' masks of as many marks and the window's length; the one
    that marks tokens of this window as frequent as the lender's own marked tokens (mean log
    count ``target``) is taken (:func:`pick_closest`; the random lender's without token
    counts). ``(None, mask, 0)`` when the lengths differ (random places, same count) or there
    is no lender (one random token)."""
    length = len(row["strings"])
    n = len(lenders.masks)
    if not n:
        mask = np.zeros(length, dtype=bool)
        mask[int(rng.integers(length))] = True
        return None, mask, 0.0
    pick = int(rng.integers(n))
    d, target = lenders.masks[pick], float(lenders.means[pick])
    if len(d) != length:
        mask = np.zeros(length, dtype=bool)
        mask[rng.choice(length, size=min(length, max(1, int(d.sum()))), replace=False)] = True
        return None, mask, 0.0
    order = rng.permutation(n)
    keep = order[(lenders.sums[order] == lenders.sums[pick]) & (lenders.lens[order] == length)]
    return np.concatenate([[pick], keep]), None, target


def pick_closest(marks: Marks, jobs: list[tuple[np.ndarray, float, np.ndarray]]) -> list[int]:
    """Per job ``(candidates, target, counts)`` (indices of masks of one length, the mean log
    count to match, the window's window_log_counts): the first candidate whose marked tokens
    of the window are on average nearest ``target`` (frequency.closest_row). The means of
    every mask for all windows of a length come from one array operation, summed per window
    and mask exactly as closest_row sums them (so the same picks, ties included)."""
    out = [0] * len(jobs)
    by_len: dict[int, list[int]] = {}
    for j, (_, _, counts) in enumerate(jobs):
        by_len.setdefault(len(counts), []).append(j)
    for length, js in by_len.items():
        idx, mat = marks.of_length(length)
        counts = np.stack([jobs[j][2] for j in js])
        n = mat.sum(axis=1)
        sums = (mat[None, :, :] * counts[:, None, :]).sum(axis=2)
        means = np.where(n > 0, sums / np.maximum(n, 1), 0.0)
        for j, m in zip(js, means, strict=True):
            cands, target, _ = jobs[j]
            pos = np.searchsorted(idx, cands)
            out[j] = int(cands[int(np.argmin(np.abs(m[pos] - target)))])
    return out


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
        # each activating window's token counts, once (its marks' mean, its borrowed marks)
        own = [window_log_counts(counts, r["tokens"]) for r in act] if counts is not None else None
        marks = Marks(right, own)
        lending = [i for i, m in enumerate(right) if m.any()]
        lenders = Marks([right[i] for i in lending], None, marks.means[lending])
        chosen: dict[int, tuple[np.ndarray, str]] = {}  # act index -> (mask, variant)
        jobs: list[tuple[np.ndarray, float, np.ndarray]] = []  # frequency matches to make
        waiting: list[int] = []
        for i, r in enumerate(act):
            if i not in wrong:
                continue
            cands, mask = wrong_candidates(r, i, marks, rng)
            if cands is None:
                if mask is not None:
                    chosen[i] = (mask, "wrong")
            elif own is None or len(cands) == 1:
                chosen[i] = (marks.masks[int(cands[0])].copy(), "wrong")
            else:
                jobs.append((cands, float(marks.means[i]), own[i]))
                waiting.append(i)
        for i, j in zip(waiting, pick_closest(marks, jobs), strict=True):
            chosen[i] = (marks.masks[j].copy(), "wrong")
        con_masks: list[np.ndarray | None] = []
        jobs, waiting = [], []
        for k, r in enumerate(con):
            cands, mask, target = contrast_candidates(r, lenders, rng)
            if cands is not None and (counts is None or len(cands) == 1):
                mask = lenders.masks[int(cands[0])].copy()
            elif cands is not None:
                jobs.append((cands, target, window_log_counts(counts, r["tokens"])))
                waiting.append(k)
            con_masks.append(mask)
        for k, j in zip(waiting, pick_closest(lenders, jobs), strict=True):
            con_masks[k] = lenders.masks[j].copy()
        made: dict[int, Item] = {}
        for i, r in enumerate(act):
            mask, variant = chosen.get(i, (right[i], "correct"))
            made[id(r)] = self._item(ex, mask, variant == "correct", r, split, variant)
        for r, mask in zip(con, con_masks, strict=True):
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
