"""The Ray engine of sharded execution: each shard is a Ray task, on any node of a cluster.

Ray is imported only here, only when ``execution.engine`` is ``ray`` (``--ray``). Tasks
write what local workers write (part files, their own response-cache shard) into the run
directory, which must therefore be on a filesystem every node sees at the same path; the
driver merges. A task whose worker dies is retried by Ray; the retry, like a rerun, merges the
dead task's cache shard before sending anything, so no answer is paid twice. At most
``workers`` tasks run at once: the LLM concurrency and rate limits are shared out between
them, so the endpoint sees the configured totals however large the cluster."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from pathlib import Path
from typing import Any

from autointerp.runner.procs import LOG_FORMAT, ShardFailedError, resolve

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ImportError(
            "execution.engine=ray (--ray) needs Ray: pip install 'autointerp[ray]'"
        ) from None
    return ray


def _task(
    fn: str, run_dir: str, config: dict[str, Any], payload: Any, index: int, level: int
) -> int:
    logging.basicConfig(level=level, format=LOG_FORMAT, datefmt="%H:%M:%S", force=True)
    from autointerp.config import RunConfig

    shard = f"r{index}-{socket.gethostname()}-{os.getpid()}"
    cfg = RunConfig.model_validate(config)
    return int(resolve(fn)(Path(run_dir), cfg, payload, lambda: None, shard))


def cluster_cpus(address: str | None) -> int:
    """CPUs of the cluster (connecting to it, or starting a local one, when needed)."""
    ray = connect(address)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def cluster_gpus(address: str | None) -> int:
    """GPUs of the cluster (0 when it has none)."""
    ray = connect(address)
    return int(ray.cluster_resources().get("GPU", 0))


def connect(address: str | None) -> Any:
    """Ray, initialised: an already initialised session is used as it is (tests, notebooks);
    else ``address`` (``auto``: the cluster this machine belongs to; ``ray://host:10001``),
    or a local single-machine cluster when None."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(
            address=address,
            include_dashboard=False,
            logging_level=logging.WARNING,
            configure_logging=False,
        )
    return ray


def run_ray(
    run_dir: Path,
    config: dict[str, Any],
    fn: str,
    payloads: list[Any],
    on_latent: Any,
    address: str | None,
    workers: int,
    retries: int,
    num_gpus: float = 0,
) -> None:
    """Run ``fn`` on every payload as Ray tasks, at most ``workers`` at once, each on one CPU
    (and ``num_gpus`` GPUs: the cache stage's forward pass on GPU workers)."""
    ray = connect(address)
    # a task that still finds the run's SQLite answer cache locked (after the cache's own
    # waits, llm/cache.py) is retried like one whose worker died: tasks resume from what is
    # cached, so a retry pays for nothing twice
    task = ray.remote(
        num_cpus=1,
        num_gpus=num_gpus,
        max_retries=retries,
        retry_exceptions=[sqlite3.OperationalError],
    )(_task)
    todo = list(enumerate(payloads))[::-1]
    pending: dict[Any, int] = {}
    run = str(Path(run_dir).resolve())
    level = logging.getLogger().getEffectiveLevel()  # the driver's, in every task
    log.info("working in %d Ray tasks, %d at a time", len(payloads), workers)
    try:
        while todo or pending:
            while todo and len(pending) < workers:
                i, payload = todo.pop()
                pending[task.remote(fn, run, config, payload, i, level)] = i
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                pending.pop(ref)
                try:
                    n = ray.get(ref)
                except ray.exceptions.RayError as e:
                    text = str(e).strip().splitlines()
                    raise ShardFailedError(
                        f"a Ray task failed (rerun to resume): {text[-1] if text else e}"
                    ) from None
                for _ in range(n):
                    on_latent()
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
