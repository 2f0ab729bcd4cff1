"""``cache_activations``: the cache stage, streaming and resumable.

Windows are processed in chunks sized in bytes (cache/budget.py); each chunk's nonzeros (for
every hookpoint, from ONE forward pass per batch) go to a spill file written by a background
thread.
After the last chunk, every latent range is merged into its part file. A killed run restarts
from its last complete chunk or part, and ends with the same bytes as an uninterrupted one.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.cache.budget import (
    GB,
    LEGACY_CHUNK_WINDOWS,
    peak_rss_bytes,
    plan_memory,
    reset_peak_rss,
    steady_heap,
)
from autointerp.cache.disk import DiskNeed, check_disk
from autointerp.cache.encode import SparseEncoder
from autointerp.cache.errors import CacheError
from autointerp.cache.layout import FORMAT_VERSION, plan_shard_latents, shard_ranges
from autointerp.cache.merge import finalize, merge_shards
from autointerp.cache.prepare import Job, Prepared, prepare
from autointerp.cache.progress import token_progress
from autointerp.cache.state import begin, load_plan, read_meta, save_json
from autointerp.cache.writer import Chunk, ChunkWriter, HookpointTarget, existing_chunks
from autointerp.config import CacheConfig, RunConfig, save_config

log = logging.getLogger(__name__)


def cache_activations(
    config: RunConfig,
    progress: bool = True,
    save: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, Path]:
    """Cache the sparse activations of every configured hookpoint; returns their folders.

    Everything is validated first (model, hookpoints, coders, widths, dataset, existing files);
    ``run.yaml`` is written only once that passed. ``timings``, when given, receives the
    seconds spent preparing, in the forward pass and merging (wall clock, and CPU time of the
    process's threads together: ``*_cpu_s``).
    """
    timings = timings if timings is not None else {}
    if config.execution.engine == "ray":  # token ranges and merges as Ray tasks
        from autointerp.cache.distributed import cache_on_ray

        return cache_on_ray(config, progress, save, timings)
    t0 = time.perf_counter()
    prep = prepare(config)
    timings["prepare_s"] = time.perf_counter() - t0
    if save:
        save_config(config)
    return cache_prepared(config, prep, progress, timings)


def cache_prepared(
    config: RunConfig,
    prep: Prepared,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> dict[str, Path]:
    """The cache stage after ``prepare`` (or a synthetic source, cache/synthetic.py)."""
    timings = timings if timings is not None else {}
    todo = [j for j in prep.jobs if j.state != "complete"]
    for job in prep.jobs:
        if job.state == "complete":
            log.info("%s: cache already complete in %s", job.hookpoint.spec, job.layout.root)
    if todo:
        for job in todo:
            begin(job.layout, job.fingerprint, job.state)
        with steady_heap():
            t1, c1 = time.perf_counter(), time.process_time()
            n_chunks, n_seqs = _forward(config, prep, todo, progress)
            t2, c2 = time.perf_counter(), time.process_time()
            for job in todo:
                _merge(config, prep, job, n_chunks, n_seqs)
            t3, c3 = time.perf_counter(), time.process_time()
        timings.update(forward_s=t2 - t1, merge_s=t3 - t2)
        timings.update(forward_cpu_s=c2 - c1, merge_cpu_s=c3 - c2)
    return {j.hookpoint.spec: j.layout.root for j in prep.jobs}


def _forward(config: RunConfig, prep: Prepared, jobs: list[Job], progress: bool) -> tuple[int, int]:
    """Run every chunk not already on disk; returns (n_chunks, n_seqs)."""
    done = [load_done(j) for j in jobs]
    if all(d is not None for d in done):
        return done[0]  # type: ignore[return-value]
    cc = config.cache
    ctx = cc.ctx_len
    counted = ctx - 1 if prep.skip_first else ctx
    plans = {j.hookpoint.spec: load_plan(j.layout) for j in jobs}
    chunk_windows = recorded_chunk_windows(plans, cc)
    layouts = [j.layout for j in jobs]
    coders = {j.hookpoint.spec: j.coder for j in jobs}
    windows = prep.windows
    writer: ChunkWriter | None = None
    n_seqs = index = 0
    with (
        prep.encoder
        or SparseEncoder(
            prep.model, [j.hookpoint for j in jobs], coders, prep.device, prep.skip_first
        ) as encoder,
        token_progress("caching", prep.n_windows * ctx, progress) as bar,
    ):
        while True:
            if chunk_windows is not None and existing_chunks(layouts, index):
                n = sum(1 for _ in itertools.islice(windows, chunk_windows))
                if n == 0:
                    break
                n_seqs, index = n_seqs + n, index + 1
                bar.advance(n * ctx)
                continue
            chunk = Chunk(index=index, seq_offset=n_seqs)
            while chunk.n_windows < (chunk_windows or cc.batch_size):
                size = min(cc.batch_size, (chunk_windows or cc.batch_size) - chunk.n_windows)
                block = list(itertools.islice(windows, size))
                if not block:
                    break
                batch = np.stack(block)
                if writer is None:
                    reset_peak_rss()  # measure what the model, coders and one batch take
                nz = encoder.encode(batch)
                if writer is None:
                    chunk_windows = _plan(config, prep, jobs, plans, nz, len(batch) * counted)
                    writer = ChunkWriter(_targets(jobs, plans))
                chunk.add(batch, nz)
                del nz, batch, block
                bar.advance(size * ctx)
            if chunk.n_windows == 0:
                break
            assert writer is not None
            n_seqs, index = n_seqs + chunk.n_windows, index + 1
            writer.put(chunk)
            del chunk
        if writer is not None:
            writer.close()
    for job in jobs:
        save_json(job.layout.done, {"n_chunks": index, "n_seqs": n_seqs})
    return index, n_seqs


def load_done(job: Job) -> tuple[int, int] | None:
    import json

    if not job.layout.done.exists():
        return None
    d = json.loads(job.layout.done.read_text())
    return int(d["n_chunks"]), int(d["n_seqs"])


def recorded_chunk_windows(plans: dict[str, dict[str, Any] | None], cc: CacheConfig) -> int | None:
    """The chunk size a resumed run must keep (chunk files are numbered in it), or None.

    A plan written before chunks were sized in bytes has no ``chunk_windows``: its chunks hold
    ``cache.chunk_windows`` (then defaulting to 2048) windows, and it resumes with them.
    """
    legacy = cc.chunk_windows or LEGACY_CHUNK_WINDOWS
    found = {p.get("chunk_windows", legacy) for p in plans.values() if p is not None}
    found.discard(None)
    if len(found) > 1:
        raise CacheError(
            f"these hookpoints were started with different chunk sizes ({sorted(found)} "
            "windows), so they cannot resume in one pass; cache them in separate commands"
        )
    return int(found.pop()) if found else None


def _plan(
    config: RunConfig,
    prep: Prepared,
    jobs: list[Job],
    plans: dict[str, dict[str, Any] | None],
    nz: dict[str, Any],
    batch_tokens: int,
) -> int:
    """Resolve the memory plan from the first batch (its L0 and the peak RSS so far), size the
    latent shards of each new job, log the sizes; returns the chunk size in windows."""
    cc = config.cache
    counted = cc.ctx_len - 1 if prep.skip_first else cc.ctx_len
    l0 = {spec: len(n) / max(batch_tokens, 1) for spec, n in nz.items()}
    memory = plan_memory(cc, sum(l0.values()) * counted, prep.n_windows, peak_rss_bytes())
    log.info(memory.describe(cc.ctx_len))
    tokens = prep.n_windows * cc.ctx_len
    check_disk(
        [
            DiskNeed(j.layout.root, prep.n_windows * counted * l0[j.hookpoint.spec], tokens)
            for j in jobs
        ],
        tokens,
    )
    recorded = recorded_chunk_windows(plans, cc)
    chunk_windows = recorded if recorded is not None else memory.chunk_windows
    if recorded is not None and recorded != memory.chunk_windows:
        log.info("resuming with the chunks of the first run: %d windows each", recorded)
    for job in jobs:
        spec = job.hookpoint.spec
        plan = plans[spec]
        if plan is None:
            expected = prep.n_windows * counted * l0[spec]
            n_latents = job.coder.n_latents
            rows = memory.shard_target_rows
            size = cc.shard_latents or plan_shard_latents(n_latents, expected, rows)
            plan = {"shards": shard_ranges(n_latents, size), "mean_l0": l0[spec]}
            log.info(
                "%s: mean L0 %.1f, %d latents per shard (%d shards)",
                spec,
                l0[spec],
                size,
                len(plan["shards"]),
            )
        if plan.get("chunk_windows") != chunk_windows:
            plan["chunk_windows"] = chunk_windows
            save_json(job.layout.plan, plan)
        plans[spec] = plan
    return chunk_windows


def _targets(
    jobs: list[Job], plans: dict[str, dict[str, Any] | None]
) -> dict[str, HookpointTarget]:
    out = {}
    for job in jobs:
        plan = plans[job.hookpoint.spec]
        assert plan is not None
        shards = [(int(a), int(b)) for a, b in plan["shards"]]
        out[job.hookpoint.spec] = HookpointTarget(job.layout, shards, job.coder.n_latents)
    return out


def _merge(config: RunConfig, prep: Prepared, job: Job, n_chunks: int, n_seqs: int) -> None:
    cc = config.cache
    plan = load_plan(job.layout)
    assert plan is not None
    shards = plan["shards"]
    counted = n_seqs * (cc.ctx_len - 1 if prep.skip_first else cc.ctx_len)
    log.info(
        "%s: merging %d chunks into %d latent shards", job.hookpoint.spec, n_chunks, len(shards)
    )
    merge_shards(job.layout, shards, n_chunks, counted, int(cc.max_memory_gb * GB))
    meta = {
        "format_version": FORMAT_VERSION,
        "hookpoint": job.hookpoint.spec,
        "capture": job.hookpoint.capture,
        "model": config.subject.model,
        "coder": config.coder.path,
        "coder_format": job.coder.format_name,
        "n_latents": job.coder.n_latents,
        "d_in": job.coder.d_in,
        "ctx_len": cc.ctx_len,
        "n_seqs": n_seqs,
        "n_tokens": n_seqs * cc.ctx_len,
        "n_tokens_counted": counted,
        "exclude_bos": prep.skip_first,
        "bos_token_id": prep.tokenizer.bos_token_id,
        "shards": [list(s) for s in shards],
        "config_hash": job.fingerprint,
    }
    finalize(job.layout, shards, n_chunks, meta)
    log.info("%s: cache complete in %s (%d windows)", job.hookpoint.spec, job.layout.root, n_seqs)


__all__ = ["cache_activations", "read_meta"]
