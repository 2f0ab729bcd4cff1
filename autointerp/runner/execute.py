"""Sharded execution, written once for every stage that fans out (explain, score).

The unit of work is a latent-range shard. A stage hands :func:`run_sharded` one payload per
shard and the name of a worker function ``fn(run_dir, config, payload, on_latent, cache_shard)
-> latents done`` that writes part files (runner/table.py) and answers into its own response-
cache shard (llm/cache.py); the stage's parent merges the parts when all shards are done, so
the result is the same as one process. The shard contract:
- every answer is committed to the worker's cache shard as it arrives; rows follow in part
  files. A killed worker loses at most its unflushed rows, whose answers are cached;
- before any request, what dead workers left (their cache shards) is merged into the main
  cache, here and in every worker (a retried Ray task, a rerun);
- rows are keyed; the merge keeps one row per key (runner/table.py);
- no worker outlives its parent (runner/procs.py; Ray ends a dead driver's tasks);
- one process at a time on a run directory (runner/lock.py).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from autointerp.config import RunConfig

log = logging.getLogger(__name__)
MIN_LATENTS_PER_WORKER = 128
ORPHAN_WAIT_S = 3.0  # how long a start waits for the cache lock of a worker that is dying
K = TypeVar("K")


def auto_workers(config: RunConfig, n_latents: int, requested: int | None = None) -> int:
    """Shards to work on at once: ``requested`` (a stage's own setting), else
    ``execution.workers``, else one per CPU core (at most 4) when there are enough latents to
    pay for starting the processes; on Ray, the cluster's CPUs. Never more than latents."""
    ex = config.execution
    asked = requested or ex.workers
    if asked:
        return max(1, min(asked, n_latents))
    if ex.engine == "ray":
        from autointerp.runner.ray_engine import cluster_cpus

        return max(1, min(cluster_cpus(ex.ray_address), n_latents))
    auto = min(4, os.cpu_count() or 1)
    return max(1, min(auto, n_latents // MIN_LATENTS_PER_WORKER))


def split_ranges(keys: Sequence[K], n: int) -> list[list[K]]:
    """``keys`` (sorted) cut into at most ``n`` contiguous ranges of about equal size."""
    if not keys:
        return []
    size = math.ceil(len(keys) / max(1, n))
    return [list(keys[i : i + size]) for i in range(0, len(keys), size)]


def n_shards(config: RunConfig, workers: int) -> int:
    """Local: one shard per process. Ray: ``shards_per_worker`` per task slot."""
    if config.execution.engine == "ray":
        return workers * config.execution.shards_per_worker
    return workers


def share_limits(config: RunConfig, workers: int) -> dict[str, Any]:
    """The config (as JSON) with the LLM concurrency and rate limits shared out between
    ``workers`` shards running at once, so that their sum stays what was configured."""
    cfg = config.model_copy(deep=True)
    llm = cfg.llm
    llm.concurrency = max(1, math.ceil(llm.concurrency / workers))
    if llm.requests_per_minute:
        llm.requests_per_minute = max(1, llm.requests_per_minute // workers)
    if llm.tokens_per_minute:
        llm.tokens_per_minute = max(1, llm.tokens_per_minute // workers)
    return cfg.model_dump(mode="json")


def recover(run_dir: Path, config: RunConfig, start: bool = True) -> int:
    """Merge what ended workers left in their response-cache shards into the main cache:
    at the ``start`` of a stage (what dead workers received, before any request is sent), and
    at its end; returns how many answers were merged."""
    if not config.llm.cache:
        return 0
    from autointerp.llm.cache import merge_shards

    path = Path(run_dir) / config.llm.cache_file
    if not path.parent.is_dir():
        return 0
    n = merge_shards(path, wait_s=ORPHAN_WAIT_S)
    if n and start:
        log.info("recovered %d answers that earlier (killed) workers had received", n)
    return n


def check_engine(config: RunConfig) -> None:
    """A one-line error for an engine the LLM backend cannot run on (before any work)."""
    if config.execution.engine == "ray" and config.llm.backend == "vllm":
        raise ValueError(
            "execution.engine=ray shares one OpenAI-compatible endpoint between tasks: serve "
            "the model (`vllm serve MODEL`, data parallel across GPUs) and set llm.model "
            "openai:MODEL with llm.base_url; the in-process vllm backend runs in one process"
        )


def run_sharded(
    run_dir: Path,
    config: RunConfig,
    fn: str,
    payloads: list[Any],
    workers: int,
    on_latent: Callable[[], None],
) -> None:
    """Run the worker ``fn`` ("package.module:function") on every payload: in worker
    processes (``execution.engine: local``) or Ray tasks (``ray``), at most ``workers`` at
    once; merges the workers' response-cache shards at the end."""
    check_engine(config)
    recover(run_dir, config)
    workers = max(1, min(workers, len(payloads)))
    cfg = share_limits(config, workers)
    ex = config.execution
    try:
        if ex.engine == "ray":
            from autointerp.runner.ray_engine import run_ray

            run_ray(run_dir, cfg, fn, payloads, on_latent, ex.ray_address, workers, ex.task_retries)
        else:
            from autointerp.runner.procs import run_processes

            run_processes(run_dir, cfg, fn, payloads, on_latent)
    finally:
        recover(run_dir, config, start=False)
