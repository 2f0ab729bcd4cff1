"""``cache_activations``: the cache stage, streaming and resumable.

Windows are processed in chunks of ``chunk_windows``; each chunk's nonzeros (for every
hookpoint, from ONE forward pass per batch) go to a spill file written by a background thread.
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

from autointerp.cache.encode import SparseEncoder
from autointerp.cache.layout import FORMAT_VERSION, plan_shard_latents, shard_ranges
from autointerp.cache.merge import finalize, merge_shards
from autointerp.cache.prepare import Job, Prepared, prepare
from autointerp.cache.progress import token_progress
from autointerp.cache.state import begin, load_plan, read_meta, save_json
from autointerp.cache.writer import Chunk, ChunkWriter, HookpointTarget, existing_chunks
from autointerp.config import RunConfig, save_config

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
    seconds spent preparing, in the forward pass and merging.
    """
    timings = timings if timings is not None else {}
    t0 = time.perf_counter()
    prep = prepare(config)
    timings["prepare_s"] = time.perf_counter() - t0
    if save:
        save_config(config)
    todo = [j for j in prep.jobs if j.state != "complete"]
    for job in prep.jobs:
        if job.state == "complete":
            log.info("%s: cache already complete in %s", job.hookpoint.spec, job.layout.root)
    if todo:
        for job in todo:
            begin(job.layout, job.fingerprint, job.state)
        t1 = time.perf_counter()
        n_chunks, n_seqs = _forward(config, prep, todo, progress)
        t2 = time.perf_counter()
        for job in todo:
            _merge(config, prep, job, n_chunks, n_seqs)
        timings.update(forward_s=t2 - t1, merge_s=time.perf_counter() - t2)
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
    coders = {j.hookpoint.spec: j.coder for j in jobs}
    layouts = [j.layout for j in jobs]
    writer: ChunkWriter | None = None
    n_seqs = n_chunks = 0
    with (
        SparseEncoder(
            prep.model, [j.hookpoint for j in jobs], coders, prep.device, prep.skip_first
        ) as encoder,
        token_progress("caching", prep.n_windows * ctx, progress) as bar,
    ):
        for index in itertools.count():
            block = list(itertools.islice(prep.windows, cc.chunk_windows))
            if not block:
                break
            n_chunks = index + 1
            if existing_chunks(layouts, index):
                n_seqs += len(block)
                bar.advance(len(block) * ctx)
                continue
            windows = np.stack(block)
            chunk = Chunk(index=index, seq_offset=n_seqs)
            for b in range(0, len(windows), cc.batch_size):
                batch = windows[b : b + cc.batch_size]
                nz = encoder.encode(batch)
                if writer is None:
                    _plan_missing(config, prep, jobs, plans, nz, len(batch) * counted)
                    writer = ChunkWriter(_targets(jobs, plans))
                chunk.add(batch, b, nz)
                bar.advance(len(batch) * ctx)
            writer.put(chunk)
            n_seqs += len(windows)
        if writer is not None:
            writer.close()
    for job in jobs:
        save_json(job.layout.done, {"n_chunks": n_chunks, "n_seqs": n_seqs})
    return n_chunks, n_seqs


def load_done(job: Job) -> tuple[int, int] | None:
    import json

    if not job.layout.done.exists():
        return None
    d = json.loads(job.layout.done.read_text())
    return int(d["n_chunks"]), int(d["n_seqs"])


def _plan_missing(
    config: RunConfig,
    prep: Prepared,
    jobs: list[Job],
    plans: dict[str, dict[str, Any] | None],
    nz: dict[str, Any],
    batch_tokens: int,
) -> None:
    """Size the latent shards of each new job from the first batch's mean L0."""
    cc = config.cache
    counted = cc.ctx_len - 1 if prep.skip_first else cc.ctx_len
    for job in jobs:
        spec = job.hookpoint.spec
        if plans[spec] is not None:
            continue
        l0 = len(nz[spec]) / max(batch_tokens, 1)
        expected = prep.n_windows * counted * l0
        n_latents = job.coder.n_latents
        size = cc.shard_latents or plan_shard_latents(n_latents, expected, cc.shard_target_rows)
        plan = {"shards": shard_ranges(n_latents, size), "mean_l0": l0}
        save_json(job.layout.plan, plan)
        plans[spec] = plan
        log.info(
            "%s: mean L0 %.1f, %d latents per shard (%d shards)",
            spec,
            l0,
            size,
            len(plan["shards"]),
        )


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
    merge_shards(job.layout, shards, n_chunks, counted)
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
