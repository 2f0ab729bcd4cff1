"""``estimate``: what the explain and score stages will send and cost, before they send anything.

The stages run for real on a random sample of the latents (all of them when there are few),
in a scratch directory, with a dry-run backend that records each request and answers like the
lexical baseline (:mod:`autointerp.llm.dry`). The requests are the real ones: same prompts,
same windows, same number per latent. Per-latent sums are extrapolated to every latent with a
95% interval from the sample's spread; requests already in the run's response cache are free.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import BaseModel

from autointerp.config import RunConfig
from autointerp.llm.config import Price, price_table
from autointerp.llm.dry import Recorded, recording
from autointerp.llm.tokens import TokenCounter, counter_for

log = logging.getLogger(__name__)
STAGES = ("explain", "score")
Z95 = 1.96


class StageEstimate(BaseModel):
    """One stage (``explain``, ``score:detection``, ...) over every latent to do."""

    requests: int
    cached_requests: int  # answered already (the run's response cache): free
    prompt_tokens: int  # of the requests still to pay
    completion_tokens: int
    max_completion_tokens: int  # sum of max_tokens: the ceiling of completion tokens
    cost_usd: float
    cost_usd_ci: tuple[float, float]  # 95% interval from the latent sample
    wall_s: float | None


class Estimate(BaseModel):
    model: str
    tokenizer: str
    price: Price | None  # the one applied (batch price with llm.batch.enabled)
    prices_as_of: str
    batch: bool
    local: bool = False  # a model on this machine (vllm, a server on localhost): free
    latents: int  # to do, every hookpoint
    latents_sampled: int
    stages: dict[str, StageEstimate]
    total: StageEstimate
    wall_basis: str

    def relative_error(self) -> float:
        """Half-width of the 95% interval of the total cost over the total (0 when exact)."""
        lo, hi = self.total.cost_usd_ci
        return 0.0 if self.total.cost_usd <= 0 else (hi - lo) / 2 / self.total.cost_usd


def _scratch(run_dir: Path) -> Path:
    """A scratch run directory reading the run's examples and cache through symlinks."""
    tmp = Path(tempfile.mkdtemp(prefix="autointerp_estimate_"))
    for sub in ("examples", "cache"):
        if (run_dir / sub).exists():
            os.symlink((run_dir / sub).resolve(), tmp / sub)
    return tmp


def _population(
    run_dir: Path,
    hookpoints: Sequence[str],
    latents: Sequence[int] | None,
    explanations: pl.DataFrame | None,
) -> list[tuple[str, int]]:
    from autointerp.explainers.run import check_latents

    if explanations is not None:
        pairs = explanations.select("hookpoint", "latent").unique().sort("hookpoint", "latent")
        if latents is not None:
            pairs = pairs.filter(pl.col("latent").is_in(list(latents)))
        return [(h, int(lat)) for h, lat in pairs.iter_rows()]
    return [(hp, int(x)) for hp in hookpoints for x in check_latents(run_dir, hp, latents)]


def _cached_keys(run_dir: Path, config: RunConfig, keys: list[str]) -> set[str]:
    path = run_dir / config.llm.cache_file
    if not config.llm.cache or not path.is_file() or not keys:
        return set()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        found: set[str] = set()
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = conn.execute(f"SELECT key FROM responses WHERE key IN ({marks})", chunk)
            found.update(r[0] for r in rows)
        return found
    finally:
        conn.close()


def _dry_run(
    run_dir: Path,
    config: RunConfig,
    stages: Sequence[str],
    sample: list[tuple[str, int]],
    scorers: Sequence[str] | None,
    explanations: pl.DataFrame | None,
) -> list[Recorded]:
    from autointerp.explainers.run import explain
    from autointerp.scorers.run import score

    tmp = _scratch(run_dir)
    cfg = config.model_copy(deep=True)
    cfg.run_dir = tmp
    cfg.score.workers = 1  # in this process, where the recorder is
    by_hp: dict[str, list[int]] = defaultdict(list)
    for hp, lat in sample:
        by_hp[hp].append(lat)
    try:
        with recording() as rec:
            for hp, lats in by_hp.items():
                if "explain" in stages:
                    explain(tmp, cfg, hookpoints=[hp], latents=lats, progress=False)
                if "score" in stages:
                    expl = None
                    if explanations is not None:
                        expl = explanations.filter(
                            (pl.col("hookpoint") == hp) & pl.col("latent").is_in(lats)
                        )
                    score(tmp, cfg, scorers, [hp], lats, explanations=expl, progress=False)
        return list(rec.requests.values())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _sums() -> dict[str, Any]:
    """Running sums of one stage; ``cost`` per latent tag (the spread gives the interval)."""
    return {
        "requests": 0,
        "cached": 0,
        "prompt": 0,
        "completion": 0,
        "max": 0,
        "cost": defaultdict(float),
    }


def _stage_of(r: Recorded) -> str:
    return str(r.request.tags.get("stage", "other"))


def _wall_s(
    config: RunConfig, run_dir: Path, requests: int, tokens: int
) -> tuple[float | None, str]:
    c = config.llm
    if c.batch.enabled:
        return None, f"batch: results within the completion window ({c.batch.completion_window})"
    if c.requests_per_minute or c.tokens_per_minute:
        minutes = max(
            requests / c.requests_per_minute if c.requests_per_minute else 0.0,
            tokens / c.tokens_per_minute if c.tokens_per_minute else 0.0,
        )
        return minutes * 60.0, "the configured llm.requests_per_minute / tokens_per_minute"
    usage = run_dir / "llm_usage.jsonl"
    if usage.is_file():
        lat = sent = 0.0
        for line in usage.read_text().splitlines():
            u = json.loads(line)
            if u.get("model") == c.model_name and u.get("backend") == c.backend:
                lat += float(u.get("latency_s") or 0.0)
                sent += float(u.get("requests", 0)) - float(u.get("cached", 0))
        if sent > 0:
            per = lat / sent
            return (
                requests * per / c.concurrency,
                f"measured: {per:.2f} s a request in llm_usage.jsonl, llm.concurrency "
                f"{c.concurrency} at once",
            )
    return None, "unknown: set llm.requests_per_minute / tokens_per_minute, or run a sample first"


def estimate(
    run_dir: str | Path,
    config: RunConfig,
    stages: Sequence[str] = STAGES,
    hookpoints: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    scorers: Sequence[str] | None = None,
    explanations: pl.DataFrame | None = None,
    sample: int | None = None,
    counter: TokenCounter | None = None,
    write_batch: str | Path | None = None,
) -> Estimate:
    """Requests, tokens, dollars and wall time of ``stages`` over every latent to do (or
    ``latents``; score only: the rows of ``explanations`` when given). Sends nothing.
    ``write_batch``: also write every latent's requests there as Batch API JSONL (for
    ``vllm run-batch``; see docs/cost.md)."""
    from autointerp.runner.examples import require_examples

    run_dir = Path(run_dir)
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ValueError(f"cannot estimate stage(s) {bad}: pick from {', '.join(STAGES)}")
    hps = require_examples(run_dir, hookpoints)
    if "explain" not in stages and explanations is None:
        from autointerp.scorers.run import load_explanations

        explanations = load_explanations(run_dir)
        explanations = explanations.filter(pl.col("hookpoint").is_in(hps))
    population = _population(
        run_dir, hps, latents, explanations if "explain" not in stages else None
    )
    n_all = len(population)
    n = n_all if write_batch else min(sample or config.llm.estimate_latents, n_all)
    rng = np.random.default_rng(config.seed)
    picked = sorted(population[i] for i in rng.choice(n_all, size=n, replace=False)) if n else []
    recorded = _dry_run(run_dir, config, stages, picked, scorers, explanations)
    if write_batch is not None:
        from autointerp.llm.batch.offline import write_requests

        log.info("wrote %d requests to %s", write_requests(recorded, write_batch), write_batch)
    counter = counter or counter_for(config.llm)
    cached = _cached_keys(run_dir, config, [r.key for r in recorded])
    price = config.llm.prices.get(config.llm.model_name)
    base = config.llm.base_url or ""
    on_localhost = any(h in base for h in ("://localhost", "://127.0.0.1", "://[::1]"))
    # as the client counts: vllm / lexical free; a server here (vllm serve) free unless priced
    local = config.llm.backend in ("vllm", "lexical") or (on_localhost and price is None)
    if price is not None and config.llm.batch.enabled:
        price = price.batched()
    sums: dict[str, dict[str, Any]] = defaultdict(_sums)
    for r in recorded:
        if r.backend == "lexical":  # the offline baseline (e.g. token-list): free
            continue
        s = sums[_stage_of(r)]
        s["requests"] += 1
        if r.key in cached:
            s["cached"] += 1
            continue
        p = counter.prompt(r.request)
        c = min(counter.completion(r.answer), r.request.sampling.max_tokens)
        s["prompt"] += p
        s["completion"] += c
        s["max"] += r.request.sampling.max_tokens
        cost = 0.0 if (price is None or local) else (p * price.input + c * price.output) / 1e6
        s["cost"][str(r.request.tags.get("latent", ""))] += cost
    scale = n_all / n if n else 0.0
    fpc = math.sqrt(max(0.0, 1 - n / n_all)) if n_all else 0.0
    sampled = [f"{hp}:{lat}" for hp, lat in picked]

    def extrapolate(s: dict[str, Any]) -> tuple[float, tuple[float, float]]:
        per = np.array([s["cost"].get(k, 0.0) for k in sampled]) if sampled else np.zeros(1)
        total = float(sum(s["cost"].values())) * scale  # untagged requests included
        half = Z95 * n_all * float(per.std(ddof=1)) / math.sqrt(n) * fpc if n > 1 else 0.0
        return total, (max(0.0, total - half), total + half)

    def stage_estimate(s: dict[str, Any]) -> StageEstimate:
        cost, ci = extrapolate(s)
        req = round(s["requests"] * scale)
        prompt, completion = round(s["prompt"] * scale), round(s["completion"] * scale)
        wall, _ = _wall_s(config, run_dir, req - round(s["cached"] * scale), prompt + completion)
        return StageEstimate(
            requests=req,
            cached_requests=round(s["cached"] * scale),
            prompt_tokens=prompt,
            completion_tokens=completion,
            max_completion_tokens=round(s["max"] * scale),
            cost_usd=cost,
            cost_usd_ci=ci,
            wall_s=wall,
        )

    total = _sums()
    for s in sums.values():
        for k in ("requests", "cached", "prompt", "completion", "max"):
            total[k] += s[k]
        for lat, v in s["cost"].items():
            total["cost"][lat] += v
    tot = stage_estimate(total)
    _, basis = _wall_s(config, run_dir, tot.requests - tot.cached_requests, tot.prompt_tokens)
    return Estimate(
        model=config.llm.model,
        tokenizer=counter.name,
        price=None if local else price,
        prices_as_of=price_table()[0],
        batch=config.llm.batch.enabled,
        local=local,
        latents=n_all,
        latents_sampled=n,
        stages={k: stage_estimate(v) for k, v in sorted(sums.items())},
        total=tot,
        wall_basis=basis,
    )
