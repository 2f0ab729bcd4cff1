"""The explainer interface and the explanation rows every explainer writes.

An explainer is a small peer: ``explain(latent, llm)`` builds requests from the latent's
``train`` windows, sends them through the shared client and turns the answers into rows.
Streaming over latents, resume and writing are done once, in ``explainers.run``.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from autointerp.explainers.config import ExplainConfig
from autointerp.llm.client import LLMClient
from autointerp.llm.types import LLMResponse
from autointerp.runner.examples import LatentExamples

SCHEMA: dict[str, pl.DataType] = {
    "hookpoint": pl.String(),
    "latent": pl.Int32(),
    "explanation_id": pl.String(),
    "explainer": pl.String(),
    "candidate": pl.Int16(),
    "selected": pl.Boolean(),
    "status": pl.String(),
    "explanation": pl.String(),
    "selection_score": pl.Float64(),
    "round": pl.Int16(),
    "train_score": pl.Float64(),
    "model": pl.String(),
    "backend": pl.String(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "latency_s": pl.Float64(),
    "cached": pl.Boolean(),
    "finish_reason": pl.String(),
    "error": pl.String(),
    "raw_text": pl.String(),
    "config_hash": pl.String(),
    "source": pl.String(),
    "explanation_set": pl.String(),
}

JSON_SCHEMA = {
    "type": "object",
    "properties": {"explanation": {"type": "string"}},
    "required": ["explanation"],
}
JSON_SCHEMA_REASONING = {
    "type": "object",
    "properties": {"reasoning": {"type": "string"}, "explanation": {"type": "string"}},
    "required": ["reasoning", "explanation"],
}


def explanation_id(text: str | None, error_key: str = "") -> str:
    """A hash of the explanation text, so explanations from any source share one key.
    Error rows (no text) get an id from ``error_key`` that no text can produce."""
    if text is None:
        return "err-" + hashlib.sha256(error_key.encode()).hexdigest()[:12]
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()[:16]


@dataclass
class ExplainContext:
    """What explainers may need besides the latent: the run's config pieces and seed."""

    config: ExplainConfig
    seed: int
    config_hash: str
    explanation_set: str = ""  # explainer settings + model + seed, hookpoint-free
    score_config: Any = None  # ScoreConfig, for best-of-k's selection scoring
    run_dir: Any = None  # the run directory (the output explainer reads output_views/)


def row(
    ex: LatentExamples,
    explainer: str,
    ctx: ExplainContext,
    *,
    text: str | None,
    error: str | None,
    response: LLMResponse | None = None,
    candidate: int = 0,
    selected: bool = True,
    status: str | None = None,
    selection_score: float | None = None,
    round: int | None = None,
    train_score: float | None = None,
) -> dict[str, Any]:
    """One explanations.parquet row."""
    r = response or LLMResponse()
    status = status or ("ok" if error is None else "failed")
    return {
        "hookpoint": ex.hookpoint,
        "latent": ex.latent,
        "explanation_id": explanation_id(text, f"{ex.hookpoint}:{ex.latent}:{candidate}:{error}"),
        "explainer": explainer,
        "candidate": candidate,
        "selected": selected,
        "status": status,
        "explanation": text,
        "selection_score": selection_score,
        "round": round,
        "train_score": train_score,
        "model": r.model or None,
        "backend": r.backend or None,
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "cost_usd": r.cost_usd,
        "latency_s": r.latency_s,
        "cached": r.cached,
        "finish_reason": r.finish_reason if response is not None else None,
        "error": error,
        "raw_text": r.text if response is not None else None,
        "config_hash": ctx.config_hash,
        "source": "autointerp",
        "explanation_set": ctx.explanation_set or None,
    }


class Explainer(ABC):
    """Writes one or more explanation rows per latent from its ``train`` windows."""

    name: ClassVar[str]
    backend: ClassVar[str | None] = None  # 'lexical' forces the offline baseline backend
    splits: ClassVar[tuple[str, ...]] = ("train",)  # the only windows it is given

    def __init__(self, ctx: ExplainContext) -> None:
        self.ctx = ctx
        self.config = ctx.config

    @abstractmethod
    async def explain(self, ex: LatentExamples, llm: LLMClient) -> list[dict[str, Any]]:
        """Rows for one latent (``ex`` holds only its train windows)."""
