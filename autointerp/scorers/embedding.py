"""Embedding: does the explanation, embedded as a query, lie nearer to the activating windows
than to the contrast windows? Cheap and LLM-free: the score is the AUROC of the cosine
similarity between the explanation and each test window (a sentence-embedding model; default
the bundled all-MiniLM-L6-v2). Window embeddings are computed once per run in ``prepare`` (a
pre-pass over every window the run needs, in big batches) and stored under
``RUN_DIR/embeddings/`` (autointerp/embedding.py), so other explanations of the same latents,
and rescoring, only look vectors up. Metric columns in docs/score.md."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.stats import rankdata

from autointerp.config import RunConfig
from autointerp.embedding import (
    Embedder,
    ExplanationStore,
    WindowStore,
    check_available,
    get_embedder,
)
from autointerp.explainers.base import explanation_id
from autointerp.llm.client import LLMClient
from autointerp.runner.examples import LatentExamples, examples_path
from autointerp.runner.session import run_vocab
from autointerp.scorers.base import (
    KEY_SCHEMA,
    WINDOW_SCHEMA,
    ScoreContext,
    Scorer,
    ScoreResult,
    window_columns,
)
from autointerp.scorers.metrics import binary_metrics

log = logging.getLogger(__name__)
CONTRAST_KINDS = ("random", "similar", "neighbour")
AUROC_KEYS = ("n", "n_pos", "n_neg", "auroc", "auroc_lo", "auroc_hi", "auroc_chance")
METRICS = (
    *AUROC_KEYS,
    *(f"auroc_{k}" for k in CONTRAST_KINDS),
    "cos_activating",
    "cos_contrast",
)
EXAMPLE_SCHEMA: dict[str, pl.DataType] = {
    **KEY_SCHEMA,
    **WINDOW_SCHEMA,
    "truth": pl.Boolean(),
    "similarity": pl.Float64(),
}


def auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUROC of ``pos`` over ``neg`` (ties count one half); NaN if one is empty."""
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


class EmbeddingScorer(Scorer):
    name = "embedding"
    example_schema = EXAMPLE_SCHEMA

    def __init__(self, ctx: ScoreContext) -> None:
        super().__init__(ctx)
        cfg = self.config.embedding
        check_available(cfg.model)  # one line, before any work
        self.embedder: Embedder = get_embedder(cfg.model, cfg.device, cfg.batch_size)
        self.windows: WindowStore | None = None
        self.queries: dict[str, np.ndarray] = {}

    @property
    def model(self) -> str:
        return self.config.embedding.model

    def settings(self) -> dict[str, Any]:
        # no judge, no highlighting: only the embedding model (not its device or batch size)
        return {
            "scorer": self.name,
            "model": self.config.embedding.model,
            "n_boot": self.config.n_boot,
            "seed": self.ctx.seed,
            "examples": self.ctx.examples_hash,
        }

    def empty_metrics(self) -> dict[str, float]:
        return dict.fromkeys(METRICS, float("nan"))

    def prepare(
        self,
        run_dir: Path,
        config: RunConfig,
        hookpoint: str,
        latents: Sequence[int],
        explanations: Sequence[str],
    ) -> None:
        """Embed (once per run) every test window of ``latents`` and every explanation."""
        self.windows = WindowStore(Path(run_dir), hookpoint, self.embedder)
        need = (
            pl.scan_parquet(examples_path(run_dir, hookpoint))
            .filter(
                pl.col("latent").is_in(list(latents))
                & (pl.col("split") == self.config.split)
                & (pl.col("kind") != "skipped")
            )
            .select("seq_id", "start", "tokens")
            .unique(["seq_id", "start"], maintain_order=True)
            .collect()
        )
        n = self.windows.ensure(need, run_vocab(run_dir, config, hookpoint))
        texts = [t for t in dict.fromkeys(explanations) if t]
        store = ExplanationStore(Path(run_dir), self.embedder)
        ids = [explanation_id(t) for t in texts]
        store.ensure(ids, texts)
        if ids:
            self.queries.update(zip(ids, store.vectors(ids), strict=True))
        log.info("embedding: %d new window embeddings for %s", n, hookpoint)

    def _query(self, explanation: str) -> np.ndarray:
        key = explanation_id(explanation)
        if key not in self.queries:
            self.queries[key] = self.embedder.embed([explanation], query=True)[0]
        return self.queries[key]

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        recs = ex.windows(split)
        if not recs:
            return ScoreResult(status="skipped", error=f"no {split} windows")
        if self.windows is None:
            raise RuntimeError("embedding scorer used before prepare(): call it per hookpoint")
        keys = [(int(r["seq_id"]), int(r["start"]), len(r["tokens"])) for r in recs]
        sims = (self.windows.lookup(keys) @ self._query(explanation)).astype(np.float64)
        kinds = np.array([r["kind"] for r in recs])
        truth = kinds == "activating"
        full = binary_metrics(
            truth, np.zeros_like(truth), sims, n_boot=self.config.n_boot, seed=self.ctx.seed
        )
        metrics = {k: full[k] for k in AUROC_KEYS}
        for kind in CONTRAST_KINDS:
            metrics[f"auroc_{kind}"] = auroc(sims[truth], sims[kinds == kind])
        metrics["cos_activating"] = float(sims[truth].mean()) if truth.any() else float("nan")
        metrics["cos_contrast"] = float(sims[~truth].mean()) if (~truth).any() else float("nan")
        examples = [
            {
                **window_columns(r, split),
                "truth": bool(t),
                "similarity": float(s),
            }
            for r, t, s in zip(recs, truth, sims, strict=True)
        ]
        return ScoreResult(metrics=metrics, examples=examples, n_examples=len(recs))
