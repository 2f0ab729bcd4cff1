"""Scoring in several processes: the latents to score are cut into contiguous ranges, one per
worker process, each with its own event loop and LLM client (the client is CPU-bound at a few
hundred requests per second on one core). Workers write part files only; the parent merges
them once all are done, so the result is the same as with one process. The LLM concurrency
and rate limits are shared out between the workers, so their sum stays what was configured.
The in-process vLLM backend always runs in one process (one engine)."""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import queue
from collections.abc import Collection
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from autointerp.config import RunConfig

log = logging.getLogger(__name__)
MIN_LATENTS_PER_WORKER = 128

# (hookpoint, latent, explanation row, scorer name, scorer config hash)
Job = tuple[str, int, dict[str, Any], str, str]


def n_workers(config: RunConfig, n_latents: int, scorers: Collection[str] | None = None) -> int:
    """``score.workers`` when set, else one per CPU core (at most 4) when there are enough
    latents to pay for starting them (seconds each); always 1 for in-process vLLM and for a
    surprisal scorer LM that may sit on a GPU. ``scorers``: the scorers this run uses (default
    ``score.scorers``; the CLI's ``--scorers`` replaces that list)."""
    names = set(config.score.scorers if scorers is None else scorers)
    if config.llm.backend == "vllm" or config.llm.batch.enabled:
        return 1  # one engine; one process owning the run's batch jobs
    sp = config.score.surprisal
    if "surprisal" in names and sp.backend == "hf" and sp.device != "cpu":
        return 1  # one scorer LM on the accelerator, not one per process
    iv = config.score.intervention
    if "intervention" in names and iv.device != "cpu":
        return 1  # the steered subject model on the accelerator, not one per process
    if config.score.workers:  # as asked (never more than one per latent)
        return max(1, min(config.score.workers, n_latents))
    auto = min(4, os.cpu_count() or 1)
    return max(1, min(auto, n_latents // MIN_LATENTS_PER_WORKER))


def split(jobs: list[Job], workers: int) -> list[list[Job]]:
    """Contiguous latent ranges with about the same number of latents each."""
    keys = sorted({(hp, lat) for hp, lat, *_ in jobs})
    size = math.ceil(len(keys) / workers)
    owner = {k: i // size for i, k in enumerate(keys)}
    out: list[list[Job]] = [[] for _ in range(workers)]
    for job in jobs:
        out[owner[(job[0], job[1])]].append(job)
    return [s for s in out if s]


def worker_config(config: RunConfig, workers: int) -> dict[str, Any]:
    """The run's config with the LLM limits shared out between ``workers``."""
    cfg = config.model_copy(deep=True)
    llm = cfg.llm
    llm.concurrency = max(1, math.ceil(llm.concurrency / workers))
    if llm.requests_per_minute:
        llm.requests_per_minute = max(1, llm.requests_per_minute // workers)
    if llm.tokens_per_minute:
        llm.tokens_per_minute = max(1, llm.tokens_per_minute // workers)
    return cfg.model_dump(mode="json")


def _worker(
    run_dir: str, config: dict[str, Any], jobs: list[Job], done_queue: Any, index: int
) -> int:
    from autointerp.scorers.run import run_jobs

    cfg = RunConfig.model_validate(config)
    shard = f"w{index}-{os.getpid()}"
    return run_jobs(Path(run_dir), cfg, jobs, lambda: done_queue.put(1), shard)


def run_parallel(
    run_dir: Path, config: RunConfig, jobs: list[Job], workers: int, on_latent: Any
) -> None:
    """Run ``jobs`` in ``workers`` processes; ``on_latent()`` is called as each latent ends."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    shards = split(jobs, workers)
    cfg = worker_config(config, len(shards))
    log.info("scoring in %d processes", len(shards))
    with ctx.Manager() as manager:
        done_queue = manager.Queue()
        with ProcessPoolExecutor(len(shards), mp_context=ctx) as pool:
            futures = [
                pool.submit(_worker, str(run_dir), cfg, shard, done_queue, i)
                for i, shard in enumerate(shards)
            ]
            pending = set(futures)
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                _drain(done_queue, on_latent)
                for f in finished:
                    f.result()  # a worker's exception ends the run (its parts are kept)
            _drain(done_queue, on_latent)
    if config.llm.cache:
        from autointerp.llm.cache import merge_shards

        merge_shards(Path(run_dir) / config.llm.cache_file)


def _drain(done_queue: Any, on_latent: Any) -> None:
    while True:
        try:
            done_queue.get_nowait()
        except queue.Empty:
            return
        on_latent()
