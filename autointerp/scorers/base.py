"""The scorer interface and the rows every scorer writes.

A scorer is a small peer: ``score(latent, explanation, llm)`` builds requests from the
latent's windows of one split (``test`` for final scores, ``selection`` for best-of-k), sends
them through the shared client, and returns per-example rows plus per-latent metrics.
Streaming, resume and writing are done once, in ``scorers.run``.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from autointerp.llm.client import LLMClient
from autointerp.llm.types import LLMResponse
from autointerp.runner.examples import LatentExamples
from autointerp.scorers.config import ScoreConfig


@dataclass
class Tally:
    """LLM usage of one (latent, explanation, scorer): what its answers cost, whether this run
    paid for them or they came from the response cache (``cached`` counts those)."""

    requests: int = 0
    failed: int = 0
    cached: int = 0
    truncated: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0

    def add(self, r: LLMResponse) -> None:
        self.requests += 1
        self.failed += 0 if r.ok else 1
        self.cached += int(r.cached)
        self.truncated += int(r.finish_reason == "length")
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost_usd += r.cost_usd
        self.latency_s += 0.0 if r.cached else r.latency_s


@dataclass
class ScoreResult:
    """What one scorer found for one latent and explanation."""

    metrics: dict[str, float] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)  # per-example rows
    n_examples: int = 0
    n_lost: int = 0  # examples whose answer was missing or malformed
    tally: Tally = field(default_factory=Tally)
    error: str | None = None
    status: str = "ok"  # ok | failed | skipped


KEY_SCHEMA: dict[str, pl.DataType] = {
    "hookpoint": pl.String(),
    "latent": pl.Int32(),
    "explanation_id": pl.String(),
    "explanation_set": pl.String(),
    "config_hash": pl.String(),
}
SCORE_SCHEMA: dict[str, pl.DataType] = {
    **KEY_SCHEMA,
    "scorer": pl.String(),
    "explainer": pl.String(),
    "explanation": pl.String(),
    "status": pl.String(),
    "error": pl.String(),
    "model": pl.String(),
    "judge_endpoint": pl.String(),
    "scorer_config": pl.String(),
    "n_examples": pl.Int64(),
    "n_lost": pl.Int64(),
    "n_requests": pl.Int64(),
    "n_failed_requests": pl.Int64(),
    "n_cached_requests": pl.Int64(),
    "n_truncated_requests": pl.Int64(),
    "prompt_tokens": pl.Int64(),
    "completion_tokens": pl.Int64(),
    "cost_usd": pl.Float64(),
    "latency_s": pl.Float64(),
}  # then the scorer's metrics, all Float64
WINDOW_SCHEMA: dict[str, pl.DataType] = {
    "split": pl.String(),
    "kind": pl.String(),
    "sampler": pl.String(),
    "quantile": pl.Int8(),
    "seq_id": pl.Int32(),
    "start": pl.Int16(),
}


SHOWN_SCHEMA: dict[str, pl.DataType] = {
    "shown_tokens": pl.Int16(),
    "shown_special": pl.Int16(),
    "highlighted": pl.List(pl.Int16()),
    "highlighted_ids": pl.List(pl.Int32()),
}


def shown_columns(
    row: dict[str, Any], vocab: Any, mask: np.ndarray | None = None
) -> dict[str, Any]:
    """What the judge was shown of a window, for the shortcut audit (``SHOWN_SCHEMA``): its
    length in tokens, how many special tokens (BOS, EOS) it shows, and the offsets and token
    ids of its highlighted tokens (null where nothing is highlighted by design)."""
    special = row.get("n_special")  # counted when the windows were read (runner/examples.py)
    if mask is None and special is not None:  # nothing highlighted: no array needed
        return {
            "shown_tokens": len(row["tokens"]),
            "shown_special": special,
            "highlighted": None,
            "highlighted_ids": None,
        }
    ids = np.asarray(row["tokens"], dtype=np.int64)
    on = None if mask is None else np.flatnonzero(np.asarray(mask, dtype=bool))
    return {
        "shown_tokens": len(ids),
        "shown_special": vocab.n_special(ids) if special is None else special,
        "highlighted": None if on is None else on.tolist(),
        "highlighted_ids": None if on is None else ids[on].tolist(),
    }


def window_columns(row: dict[str, Any], split: str) -> dict[str, Any]:
    """The columns that say which window an example row is (``WINDOW_SCHEMA``)."""
    return {  # written out (not a comprehension over the names): built once per window shown
        "split": split,
        "kind": row["kind"],
        "sampler": row["sampler"],
        "quantile": row["quantile"],
        "seq_id": row["seq_id"],
        "start": row["start"],
    }


def collected(
    scorer: str,
    metrics: dict[str, float],
    examples: list[dict[str, Any]],
    n_ok: int,
    n_total: int,
    tally: Tally,
    errors: list[str | None],
) -> ScoreResult:
    """A ScoreResult from per-example answers; ``failed`` (never a number) when none was
    usable, with the first error as the reason."""
    result = ScoreResult(
        metrics=metrics, examples=examples, n_examples=n_ok, n_lost=n_total - n_ok, tally=tally
    )
    if n_ok == 0:
        first = next((e for e in errors if e), "no answer")
        result.status, result.error = "failed", f"every {scorer} answer failed: {first}"
    return result


@dataclass
class ScoreContext:
    config: ScoreConfig
    seed: int
    llm_model: str
    backend: str  # 'lexical', 'vllm', 'openai', 'openrouter'
    examples_hash: str = ""
    endpoint: str | None = None  # the judge's server (llm.endpoint); None in process


def seeded_rng(*parts: object) -> np.random.Generator:
    """A generator determined by ``parts`` (seed, latent, scorer, ...): prompts are the same on
    every run, so a rerun hits the response cache."""
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class Scorer(ABC):
    """Scores one explanation of one latent on one split."""

    name: ClassVar[str]
    example_schema: ClassVar[dict[str, pl.DataType]]  # its .examples.parquet columns

    def __init__(self, ctx: ScoreContext) -> None:
        self.ctx = ctx
        self.config = ctx.config

    def settings(self) -> dict[str, Any]:
        """Everything the scores depend on besides the explanation and the examples."""
        section = getattr(self.config, self.name, None)
        return {
            "scorer": self.name,
            "section": section.model_dump(mode="json") if section is not None else None,
            "highlight_threshold": self.config.highlight_threshold,
            "n_boot": self.config.n_boot,
            "seed": self.ctx.seed,
            "llm": self.ctx.llm_model,
            "examples": self.ctx.examples_hash,
            **({"endpoint": self.judge_endpoint} if self.judge_endpoint else {}),
        }

    def config_hash(self) -> str:
        blob = json.dumps(self.settings(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def scorer_config(self) -> str:
        """The config hash without the examples' (``scorer_config`` column): the same for a
        run and its controls, and across hookpoints, when the settings and judge are."""
        settings = {k: v for k, v in self.settings().items() if k != "examples"}
        blob = json.dumps(settings, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    @property
    def judge_endpoint(self) -> str | None:
        """The server of the judge (``judge_endpoint`` column): the LLM's endpoint when the
        scores come from the run's LLM, else None (an LLM-free or in-process model)."""
        return self.ctx.endpoint if self.model == self.ctx.llm_model else None

    def empty_metrics(self) -> dict[str, float]:
        """The scorer's metric columns, all NaN: the row of a latent that got no number."""
        return {}

    @property
    def model(self) -> str:
        """What the scores come from (the ``model`` column): the judge; an LLM-free scorer
        names its own model."""
        return self.ctx.llm_model

    def prepare(
        self,
        run_dir: Path,
        config: Any,
        hookpoint: str,
        latents: Sequence[int],
        explanations: Sequence[str],
    ) -> None:
        """Optional pre-pass, once per hookpoint before any latent is scored (``config``: the
        RunConfig): e.g. embed every window the run needs in big batches. Default: nothing."""
        return None

    @abstractmethod
    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        """Score ``explanation`` on the windows of ``split``."""
