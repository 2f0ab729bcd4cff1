"""The cache stage as Ray tasks (``execution.engine: ray``, ``--ray``): token ranges on GPU
workers, then the per-shard merges, then the finalize step on the driver.

The unit of work, and of resume, is the chunk of the one-process stage (cache/run.py): chunk
``i`` holds windows ``[i * chunk_windows, (i + 1) * chunk_windows)`` of the dataset, with
``chunk_windows`` fixed in ``_work/plan.json`` before any task starts (from the first batch,
as one process does). So the split depends on the data and the config only, never on the
number of workers: a task takes a contiguous range of chunk indices, skips the chunks whose
files exist, and writes the others (each file atomically) into the shared run directory. A
killed task, Ray's retry of it, or a rerun with any number of workers redoes only the chunks
and the part files that are missing. The files are those of one process, byte for byte:
the merge and finalize are cache/merge.py's, called with the same plan.

Each forward task loads the model and coders once and tokenizes the dataset up to the end of
its range (the windows before it are skipped, not encoded).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache.budget import GB, reset_peak_rss
from autointerp.cache.encode import SparseEncoder
from autointerp.cache.errors import CacheError
from autointerp.cache.layout import CacheLayout, open_parquet
from autointerp.cache.merge import KILL_AFTER_SHARDS_ENV, merge_shards
from autointerp.cache.prepare import Job, prepare
from autointerp.cache.progress import token_progress
from autointerp.cache.state import begin, load_plan, save_json
from autointerp.cache.writer import KILL_AFTER_CHUNKS_ENV, Chunk, ChunkWriter, existing_chunks
from autointerp.config import RunConfig, save_config

log = logging.getLogger(__name__)
TEST_HOOKS = (KILL_AFTER_CHUNKS_ENV, KILL_AFTER_SHARDS_ENV)  # handed from the driver to tasks


def cache_on_ray(
    config: RunConfig,
    progress: bool = True,
    save: bool = True,
    timings: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """The cache stage with its forward pass and merges as Ray tasks; the same files as
    ``cache_activations`` in one process. ``timings`` receives the seconds of each phase and
    ``chunks_encoded`` / ``chunks_total`` (what this call ran, what the cache holds)."""
    import time

    from autointerp.cache import run as one
    from autointerp.runner.ray_engine import run_ray

    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    prep = prepare(_driver_config(config))
    timings["prepare_s"] = time.perf_counter() - t0
    if save:
        save_config(config)  # as given, like one process (the run dir may move)
    config = config.model_copy(deep=True)
    config.run_dir = Path(config.run_dir).resolve()  # tasks may start elsewhere
    todo = [j for j in prep.jobs if j.state != "complete"]
    if not todo:
        return {j.hookpoint.spec: j.layout.root for j in prep.jobs}
    for job in todo:
        begin(job.layout, job.fingerprint, job.state)
    cc = config.cache
    plans = {j.hookpoint.spec: load_plan(j.layout) for j in todo}
    chunk_windows = one.recorded_chunk_windows(plans, cc)
    if chunk_windows is None or any(p is None for p in plans.values()):
        chunk_windows = _plan_from_first_batch(config, prep, todo, plans)
    prep.model = None  # the driver encodes nothing more
    ex = config.execution
    gpus = _gpus_per_task(config)
    workers = ex.workers or _cluster_slots(ex.ray_address, gpus)
    hooks = {k: os.environ[k] for k in TEST_HOOKS if os.environ.get(k)}
    cfg = config.model_dump(mode="json")
    run_dir = Path(config.run_dir)
    done = [one.load_done(j) for j in todo]
    t1 = time.perf_counter()
    encoded = 0
    if any(d is None for d in done):
        n_planned = math.ceil(prep.n_windows / chunk_windows)
        chunks = list(range(n_planned))
        ranges = _split(chunks, workers)  # one model load per task slot
        payloads = [{"start": r[0], "end": r[-1] + 1, "hooks": hooks} for r in ranges]
        window_tokens = chunk_windows * cc.ctx_len
        with token_progress("caching", prep.n_windows * cc.ctx_len, progress) as bar:

            def on_chunk() -> None:
                nonlocal encoded
                encoded += 1
                bar.advance(window_tokens)

            log.info(
                "caching %d chunks in %d Ray tasks, %d at a time", n_planned, len(ranges), workers
            )
            fn = "autointerp.cache.distributed:forward_range"
            run_ray(
                run_dir,
                cfg,
                fn,
                payloads,
                on_chunk,
                ex.ray_address,
                workers,
                ex.task_retries,
                num_gpus=gpus,
            )
        n_chunks, n_seqs = _count_chunks([j.layout for j in todo], n_planned)
        for job in todo:
            save_json(job.layout.done, {"n_chunks": n_chunks, "n_seqs": n_seqs})
    else:
        n_chunks, n_seqs = done[0]  # type: ignore[misc]
    t2 = time.perf_counter()
    counted = n_seqs * (cc.ctx_len - 1 if prep.skip_first else cc.ctx_len)
    payloads = []
    for job in todo:
        shards = load_plan(job.layout)["shards"]  # type: ignore[index]
        missing = [
            i
            for i, (s, e) in enumerate(shards)
            if not (job.layout.part(s, e).exists() and job.layout.shard_stats(s, e).exists())
        ]
        for group in _split(missing, workers * ex.shards_per_worker):
            payloads.append(
                {
                    "root": str(job.layout.root.resolve()),
                    "indices": group,
                    "n_chunks": n_chunks,
                    "counted": counted,
                    "hooks": hooks,
                }
            )
    if payloads:
        log.info("merging %d latent-shard groups in Ray tasks", len(payloads))
        fn = "autointerp.cache.distributed:merge_range"
        run_ray(run_dir, cfg, fn, payloads, lambda: None, ex.ray_address, workers, ex.task_retries)
    t3 = time.perf_counter()
    for job in todo:
        one._merge(config, prep, job, n_chunks, n_seqs)  # every part exists: finalize only
    timings.update(forward_s=t2 - t1, merge_s=time.perf_counter() - t2, merge_tasks_s=t3 - t2)
    timings.update(chunks_encoded=encoded, chunks_total=n_chunks)
    return {j.hookpoint.spec: j.layout.root for j in prep.jobs}


def _driver_config(config: RunConfig) -> RunConfig:
    """The driver validates and plans on the configured device, or on the CPU when that is a
    GPU this machine lacks (a CPU-only head node of a GPU cluster)."""
    import torch

    if config.subject.device.startswith("cuda") and not torch.cuda.is_available():
        drv = config.model_copy(deep=True)
        drv.subject.device = "cpu"
        return drv
    return config


def _gpus_per_task(config: RunConfig) -> int:
    """1 when the forward pass runs on CUDA (configured, or ``auto`` on a cluster with GPUs)."""
    device = config.subject.device.strip().lower()
    if device.startswith("cuda"):
        return 1
    if device == "auto":
        from autointerp.runner.ray_engine import cluster_gpus

        return 1 if cluster_gpus(config.execution.ray_address) > 0 else 0
    return 0


def _cluster_slots(address: str | None, gpus: int) -> int:
    from autointerp.runner.ray_engine import cluster_cpus, cluster_gpus

    return max(1, cluster_gpus(address)) if gpus else cluster_cpus(address)


def _split(items: list[int], n: int) -> list[list[int]]:
    from autointerp.runner.execute import split_ranges

    return split_ranges(items, n)


def _plan_from_first_batch(
    config: RunConfig, prep: Any, jobs: list[Job], plans: dict[str, Any]
) -> int:
    """Encode the first batch on the driver and fix the plan from it, as one process does."""
    from autointerp.cache import run as one

    cc = config.cache
    counted = cc.ctx_len - 1 if prep.skip_first else cc.ctx_len
    batch = np.stack(list(itertools.islice(prep.windows, cc.batch_size)))
    coders = {j.hookpoint.spec: j.coder for j in jobs}
    reset_peak_rss()
    with SparseEncoder(
        prep.model, [j.hookpoint for j in jobs], coders, prep.device, prep.skip_first
    ) as encoder:
        nz = encoder.encode(batch)
    return int(one._plan(config, prep, jobs, plans, nz, len(batch) * counted))


def _count_chunks(layouts: list[CacheLayout], n_planned: int) -> tuple[int, int]:
    """(chunks, windows) on disk after every forward task succeeded: chunks ``0..n-1``, the
    later ones absent because the dataset ended."""
    n_chunks = n_seqs = 0
    for index in range(n_planned):
        if not existing_chunks(layouts, index):
            break
        n_chunks += 1
        n_seqs += open_parquet(layouts[0].token_chunk(index)).metadata.num_rows
    later = [i for i in range(n_chunks, n_planned) if existing_chunks(layouts, i)]
    if later:
        raise CacheError(f"chunk {n_chunks} is missing but chunk {later[0]} exists: rerun")
    return n_chunks, n_seqs


@contextlib.contextmanager
def _hooks(env: dict[str, str]) -> Iterator[None]:
    """The driver's kill-test hooks in this (reused) Ray worker, for this task only."""
    saved = {k: os.environ.get(k) for k in TEST_HOOKS}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def forward_range(
    run_dir: Path,
    config: RunConfig,
    payload: dict[str, Any],
    on_chunk: Callable[[], None],
    shard: str,
) -> int:
    """A Ray task: encode chunks ``[start, end)`` that are not on disk; returns how many."""
    with _hooks(payload.get("hooks", {})):
        return _forward_range(config, int(payload["start"]), int(payload["end"]))


def _forward_range(config: RunConfig, start: int, end: int) -> int:
    from autointerp.cache import run as one

    prep = prepare(config)
    jobs = [j for j in prep.jobs if j.state != "complete"]
    plans = {j.hookpoint.spec: load_plan(j.layout) for j in jobs}
    cw = one.recorded_chunk_windows(plans, config.cache)
    if cw is None or any(p is None for p in plans.values()):
        raise CacheError("the cache has no plan.json with chunk_windows: rerun the cache stage")
    layouts = [j.layout for j in jobs]
    bs = config.cache.batch_size
    windows = prep.windows
    skipped = sum(1 for _ in itertools.islice(windows, start * cw))
    if skipped < start * cw:
        return 0  # the dataset ends before this range
    coders = {j.hookpoint.spec: j.coder for j in jobs}
    writer = ChunkWriter(one._targets(jobs, plans))
    encoded = 0
    with SparseEncoder(
        prep.model, [j.hookpoint for j in jobs], coders, prep.device, prep.skip_first
    ) as encoder:
        for index in range(start, end):
            if existing_chunks(layouts, index):
                if sum(1 for _ in itertools.islice(windows, cw)) < cw:
                    break
                continue
            chunk = Chunk(index=index, seq_offset=index * cw)
            while chunk.n_windows < cw:
                block = list(itertools.islice(windows, min(bs, cw - chunk.n_windows)))
                if not block:
                    break
                batch = np.stack(block)
                chunk.add(batch, encoder.encode(batch))
            n = chunk.n_windows
            if n == 0:
                break
            writer.put(chunk)
            del chunk
            encoded += 1
            if n < cw:
                break
    writer.close()
    log.info("chunks %d-%d: %d encoded", start, end - 1, encoded)
    return encoded


def merge_range(
    run_dir: Path,
    config: RunConfig,
    payload: dict[str, Any],
    on_latent: Callable[[], None],
    shard: str,
) -> int:
    """A Ray task: write the part files (and statistics) of the shards at ``indices``."""
    layout = CacheLayout(Path(payload["root"]))
    plan = load_plan(layout)
    if plan is None:
        raise CacheError(f"{layout.plan} is missing: rerun the cache stage")
    with _hooks(payload.get("hooks", {})):
        merge_shards(
            layout,
            plan["shards"],
            int(payload["n_chunks"]),
            int(payload["counted"]),
            int(config.cache.max_memory_gb * GB),
            only=set(payload["indices"]),
        )
    return len(payload["indices"])
