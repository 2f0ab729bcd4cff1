"""Intruder: can a judge find the odd window out among the latent's activating windows,
without any explanation? It measures the LATENT's interpretability, not the explanation's
(Paulo & Belrose 2025 found it tracks human judgement).

Each prompt shows ``n - 1`` activating windows of one quantile bin and one intruder at a
seeded, uniformly random position: a contrast window (``mode: contrast``) or an activating
window of the most distant quantile bin (``mode: internal``). Every window is highlighted
alike: activating windows (the intruder too in internal mode) where the latent fires; a
contrast intruder gets the highlight mask of another activating window of the same quantile
bin that the prompt does not show (same distribution of count and places; random places, or a
shown window's exact marks, could give the intruder away: scorers/audit.py measures it); with
the cache's token counts, of the unshown activating windows' masks with as many marks, the one
that marks tokens of the intruder as frequent as the donor's own marked tokens. The judge
answers the intruder's number; the score is accuracy, chance 1/n.

The requests never depend on the explanation (it is not shown), so scoring a latent's
second explanation repeats the same prompts: the response cache answers them for free.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from autointerp import prompts
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse, SamplingParams
from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.scorers.base import (
    KEY_SCHEMA,
    SHOWN_SCHEMA,
    WINDOW_SCHEMA,
    Scorer,
    ScoreResult,
    Tally,
    collected,
    seeded_rng,
    shown_columns,
)
from autointerp.scorers.frequency import closest, mean_log_count, token_log_counts
from autointerp.scorers.judge import window_meta
from autointerp.scorers.metrics import accuracy_metrics
from autointerp.text import excerpts, highlight

EXAMPLE_SCHEMA: dict[str, pl.DataType] = {
    **KEY_SCHEMA,
    **WINDOW_SCHEMA,
    "prompt": pl.Int32(),
    "position": pl.Int32(),
    "prompt_quantile": pl.Int8(),
    "truth": pl.Boolean(),
    "prediction": pl.Boolean(),
    "error": pl.String(),
    **SHOWN_SCHEMA,
}


def answer_schema(n: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"intruder": {"type": "integer", "minimum": 1, "maximum": n}},
        "required": ["intruder"],
    }


@dataclass
class Prompt:
    """One odd-one-out question: its windows in the order shown, masks, the intruder's index."""

    rows: list[dict[str, Any]]
    masks: list[np.ndarray]
    intruder: int  # 0-based position of the intruder
    quantile: int | None  # bin of the n-1 activating windows


def read_choice(response: LLMResponse, n: int) -> tuple[int | None, str | None]:
    """(0-based chosen position, error)."""
    if not response.ok:
        return None, response.error
    parsed = response.parsed
    value = parsed.get("intruder") if isinstance(parsed, dict) else None
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        return None, "answer lacks an integer 'intruder'"
    if not 1 <= value <= n:
        return None, f"intruder {value} is not between 1 and {n}"
    return value - 1, None


def _cycle(rows: list[Any], rng: np.random.Generator):
    """Endless seeded draws without replacement (a new permutation when one runs out)."""
    while rows:
        for i in rng.permutation(len(rows)):
            yield rows[int(i)]


def _far_bin(q: int | None, bins: list[int | None], rng: np.random.Generator) -> int | None:
    """The quantile bin farthest from ``q`` (ties: a seeded choice); None without one."""
    others = [b for b in bins if b is not None and b != q]
    if q is None or not others:
        return None
    far = max(abs(b - q) for b in others)
    ties = [b for b in others if abs(b - q) == far]
    return ties[int(rng.integers(len(ties)))]


class IntruderScorer(Scorer):
    name = "intruder"
    example_schema = EXAMPLE_SCHEMA

    def prompts(self, ex: LatentExamples, split: str) -> tuple[list[Prompt], str | None]:
        """The latent's prompts (seeded: the same on every run), or (``[]``, why none)."""
        cfg = self.config.intruder
        n = cfg.examples_per_prompt
        rng = seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, self.name, split, cfg.mode)
        thr = self.config.highlight_threshold
        counts = getattr(self, "_log_counts", None)
        by_bin: dict[int | None, list[dict[str, Any]]] = {}
        act = ex.windows(split, "activating")
        for r in act:
            by_bin.setdefault(r["quantile"], []).append(r)
        bins = sorted(by_bin, key=lambda b: -1 if b is None else b)
        groups: list[list[tuple[int | None, list[dict[str, Any]]]]] = []
        for b in bins:
            rows = [by_bin[b][int(i)] for i in rng.permutation(len(by_bin[b]))]
            groups.append([(b, rows[i : i + n - 1]) for i in range(0, len(rows) - n + 2, n - 1)])
        # round-robin over the bins, so that the prompt cap keeps every bin represented
        chunks = [
            g[i] for i in range(max(map(len, groups), default=0)) for g in groups if i < len(g)
        ]
        chunks = chunks[: cfg.max_prompts]
        if not chunks:
            return [], f"fewer than {n - 1} {split} activating windows in any quantile bin"
        contrast = _cycle(ex.windows(split, "contrast"), rng)
        pools = {b: _cycle(by_bin[b], rng) for b in bins}
        out = []
        for b, members in chunks:
            if cfg.mode == "internal":
                far = _far_bin(b, bins, rng)
                if far is None:
                    return [], "internal mode needs activating windows of two quantile bins"
                intruder = next(pools[far])
            else:
                intruder = next(contrast, None)
                if intruder is None:
                    return [], f"no {split} contrast windows"
            masks = [highlight_mask(r["activations_norm"], thr) for r in members]
            if cfg.mode == "internal":
                mask = highlight_mask(intruder["activations_norm"], thr)
            else:
                # a window of the same bin NOT shown in this prompt lends its mask (a member's
                # would repeat that member's marks exactly: a tell), else a member's
                shown = {id(r) for r in members}
                pool = [r for r in by_bin[b] if id(r) not in shown] or members
                donor = pool[int(rng.integers(len(pool)))]
                lent = highlight_mask(donor["activations_norm"], thr)
                if counts is not None and len(lent) == len(intruder["strings"]):
                    # of the unshown windows' masks with as many marks, the one marking tokens
                    # of the intruder as frequent in the cache as the donor's own marked ones
                    unshown = [r for r in act if id(r) not in shown]
                    same = [highlight_mask(unshown[int(i)]["activations_norm"], thr)
                            for i in rng.permutation(len(unshown))]  # fmt: skip
                    same = [lent] + [m for m in same if m.sum() == lent.sum()]
                    target = mean_log_count(counts, donor["tokens"], lent)
                    lent = closest(np.asarray(intruder["tokens"]), same, target, counts)
                mask = self._borrowed_mask(lent, intruder, rng)
            pos = int(rng.integers(n))
            out.append(
                Prompt(
                    rows=[*members[:pos], intruder, *members[pos:]],
                    masks=[*masks[:pos], mask, *masks[pos:]],
                    intruder=pos,
                    quantile=b,
                )
            )
        return out, None

    def prepare(self, run_dir, config, hookpoint, latents, explanations) -> None:
        """Token counts of the hookpoint's cache: a contrast intruder's marks are matched to
        the activating ones in how frequent the marked tokens are (none without a cache)."""
        self._log_counts = token_log_counts(run_dir, hookpoint)

    @staticmethod
    def _borrowed_mask(
        donor: np.ndarray, row: dict[str, Any], rng: np.random.Generator
    ) -> np.ndarray:
        """A member's mask on the contrast window (random places, same count, if the lengths
        differ)."""
        length = len(row["strings"])
        if len(donor) == length:
            return donor.copy()
        mask = np.zeros(length, dtype=bool)
        k = min(length, max(1, int(donor.sum())))
        mask[rng.choice(length, size=k, replace=False)] = True
        return mask

    def request(self, p: Prompt, tags: dict[str, str | int]) -> LLMRequest:
        cfg = self.config.intruder
        shown = excerpts([highlight(r["strings"], m) for r, m in zip(p.rows, p.masks, strict=True)])
        task = {
            "kind": "intruder",
            "examples": [
                {"tokens": list(r["strings"]), "highlighted": m.astype(int).tolist()}
                for r, m in zip(p.rows, p.masks, strict=True)
            ],
        }
        return LLMRequest(
            messages=[
                ChatMessage(role="system", content=prompts.text("intruder_system")),
                ChatMessage(
                    role="user",
                    content=prompts.render("intruder_user", n=len(p.rows), examples=shown),
                ),
            ],
            sampling=SamplingParams(temperature=0.0, max_tokens=cfg.max_tokens),
            json_schema=answer_schema(len(p.rows)),
            task=task,
            tags=tags,
            check=lambda r, n=len(p.rows): read_choice(r, n)[1],
        )

    def empty_metrics(self) -> dict[str, float]:
        return {k: float("nan") for k in accuracy_metrics(np.zeros(0, bool), 1)}

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        # ``explanation`` is deliberately unused: the prompts do not depend on it
        plist, why = self.prompts(ex, split)
        if not plist:
            return ScoreResult(status="skipped", error=why)
        tags = {"stage": f"score:{self.name}", "latent": f"{ex.hookpoint}:{ex.latent}"}
        responses = await asyncio.gather(*(llm.generate(self.request(p, tags)) for p in plist))
        tally = Tally()
        rows, correct, n_choices, bins, errors = [], [], [], [], []
        for k, (p, resp) in enumerate(zip(plist, responses, strict=True)):
            tally.add(resp)
            choice, err = read_choice(resp, len(p.rows))
            errors.append(err)
            if err is None:
                correct.append(choice == p.intruder)
                n_choices.append(len(p.rows))
                bins.append(p.quantile)
            for j, (r, m) in enumerate(zip(p.rows, p.masks, strict=True)):
                rows.append(
                    {
                        **{c: v for c, v in window_meta(r, split).items() if c != "variant"},
                        **shown_columns(r, ex.vocab, m),
                        "prompt": k,
                        "position": j,
                        "prompt_quantile": p.quantile,
                        "truth": j == p.intruder,
                        "prediction": None if err is not None else j == choice,
                        "error": err,
                    }
                )
        metrics = accuracy_metrics(
            np.array(correct, bool),
            np.array(n_choices) if n_choices else 1,
            n_boot=self.config.n_boot,
            seed=self.ctx.seed,
        )
        for b in sorted({b for b in bins if b is not None}):
            hits = [c for c, q in zip(correct, bins, strict=True) if q == b]
            metrics[f"accuracy_q{b}"] = float(np.mean(hits))
        return collected(self.name, metrics, rows, len(correct), len(plist), tally, errors)
