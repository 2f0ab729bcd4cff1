"""Scoring in several shards (worker processes, or Ray tasks): the latents to score are cut
into contiguous ranges, each worked on with its own event loop and LLM client (the client is
CPU-bound at a few hundred requests per second on one core). The shard contract (durable
answers, recovery of dead workers' answers, no orphans, keyed rows) is runner/execute.py's.
The in-process vLLM backend always runs in one process (one engine)."""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

from autointerp.config import RunConfig
from autointerp.runner.execute import auto_workers, n_shards, run_sharded, split_ranges

log = logging.getLogger(__name__)

# (hookpoint, latent, explanation row, scorer name, scorer config hash)
Job = tuple[str, int, dict[str, Any], str, str]


def n_workers(config: RunConfig, n_latents: int, scorers: Collection[str] | None = None) -> int:
    """``score.workers`` (else ``execution.workers``, else automatic: runner/execute.py);
    always 1 for in-process vLLM and for a surprisal scorer LM or a steered subject model that
    may sit on a GPU. ``scorers``: the scorers this run uses (default ``score.scorers``)."""
    names = set(config.score.scorers if scorers is None else scorers)
    if config.llm.backend == "vllm" or config.llm.batch.enabled:
        return 1  # one engine; one process owning the run's batch jobs
    sp = config.score.surprisal
    if "surprisal" in names and sp.backend == "hf" and sp.device != "cpu":
        return 1  # one scorer LM on the accelerator, not one per process
    iv = config.score.intervention
    if "intervention" in names and iv.device != "cpu":
        return 1  # the steered subject model on the accelerator, not one per process
    return auto_workers(config, n_latents, config.score.workers)


def split(jobs: list[Job], shards: int) -> list[list[Job]]:
    """Contiguous latent ranges with about the same number of latents each."""
    keys = sorted({(hp, lat) for hp, lat, *_ in jobs})
    owner = {k: i for i, rng in enumerate(split_ranges(keys, shards)) for k in rng}
    out: list[list[Job]] = [[] for _ in range(max(owner.values(), default=-1) + 1)]
    for job in jobs:
        out[owner[(job[0], job[1])]].append(job)
    return out


def run_parallel(
    run_dir: Path, config: RunConfig, jobs: list[Job], workers: int, on_latent: Any
) -> None:
    """Run ``jobs`` in ``workers`` shards at once; ``on_latent()`` is called as each latent
    ends (as each shard ends on Ray)."""
    shards = split(jobs, n_shards(config, workers))
    run_sharded(run_dir, config, "autointerp.scorers.run:run_jobs", shards, workers, on_latent)
