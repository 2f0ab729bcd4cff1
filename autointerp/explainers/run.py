"""``explain``: stream every latent's train windows through the explainer, write
``explanations.parquet`` (columns in docs/explain.md). Resumable: latents already explained
with the same config are skipped (``force`` redoes them), latents whose rows failed are
explained again (old rows replaced); the response cache covers a run killed between a request
and its row."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autointerp.config import RunConfig
from autointerp.explainers.base import SCHEMA, ExplainContext, Explainer, row
from autointerp.explainers.registry import make_explainer
from autointerp.runner.examples import (
    LatentExamples,
    all_latents,
    examples_hash,
    iter_latent_examples,
    require_examples,
)
from autointerp.runner.execute import (
    auto_workers,
    check_engine,
    n_shards,
    recover,
    run_sharded,
    split_ranges,
)
from autointerp.runner.lock import run_lock
from autointerp.runner.loop import run as run_loop
from autointerp.runner.progress import StageProgress
from autointerp.runner.provenance import llm_settings, record_stage
from autointerp.runner.session import open_client, run_vocab
from autointerp.runner.stream import stream
from autointerp.runner.table import PartTable
from autointerp.runner.usage import record_usage

log = logging.getLogger(__name__)
KEY = ["hookpoint", "latent", "config_hash", "candidate"]


def explanations_path(run_dir: Path) -> Path:
    return Path(run_dir) / "explanations.parquet"


def explainer_settings(config: RunConfig, backend: str | None) -> dict[str, Any]:
    """What an explanation depends on besides its latent's examples: the explainer and its
    settings, the model (``backend`` when the explainer forces one), the server of an API
    model, the seed (and best-of-k's / iterative's selection scorer)."""
    payload: dict[str, Any] = {
        "explain": config.explain.used_by(config.explain.explainer),
        "llm": backend or config.llm.model,
        "seed": config.seed,
    }
    if backend is None and config.llm.base_url:  # a named server (an API's default: none)
        payload["endpoint"] = config.llm.endpoint
    if config.explain.explainer in ("best-of-k", "iterative"):
        payload["selection"] = config.score.detection.model_dump(mode="json")
    return payload


def explanation_set(config: RunConfig, backend: str | None) -> str:
    """The identity of an explanation set (``explanation_set`` column): a hash of
    :func:`explainer_settings`; the same on every hookpoint, so explaining a run with two
    explainers (or one explainer and two models) gives two sets that are never mixed."""
    blob = json.dumps(explainer_settings(config, backend), sort_keys=True).encode()
    return "x" + hashlib.sha256(blob).hexdigest()[:11]


def explain_hash(config: RunConfig, run_dir: Path, hookpoint: str, backend: str | None) -> str:
    """Hash of what a latent's explanation depends on: explainer settings, model, examples."""
    payload = explainer_settings(config, backend)
    payload["examples"] = examples_hash(run_dir, hookpoint)
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def forced_config(config: RunConfig) -> RunConfig:
    """``config`` whose client asks again what earlier runs cached (``--force``)."""
    config = config.model_copy(deep=True)
    config.llm.refresh_before = time.time()
    return config


def check_latents(run_dir: Path, hookpoint: str, latents: Sequence[int] | None) -> np.ndarray:
    """The latents to work on; a one-line error naming requested latents with no examples."""
    have = all_latents(run_dir, hookpoint)
    if latents is None:
        return have
    wanted = np.unique(np.asarray(list(latents), dtype=np.int64))
    missing = np.setdiff1d(wanted, have)
    if len(missing):
        shown = ", ".join(map(str, missing[:10].tolist())) + (" ..." if len(missing) > 10 else "")
        raise ValueError(
            f"{len(missing)} latent(s) have no examples in {hookpoint}: {shown}; "
            f"the examples hold latents {int(have.min())}..{int(have.max())} "
            "(run `autointerp sample` for them, or fix --latents)"
            if len(have)
            else f"the examples of {hookpoint} hold no latents: rerun `autointerp sample`"
        )
    return wanted


async def _safe(explainer: Explainer, ex: LatentExamples, llm: Any) -> list[dict[str, Any]]:
    if ex.skipped is not None:
        return [
            row(ex, explainer.name, explainer.ctx, text=None, error=ex.skipped, status="skipped")
        ]
    try:
        return await explainer.explain(ex, llm)
    except Exception as e:  # a bug on one latent must not lose the others' work
        log.exception("explainer %s failed on latent %s", explainer.name, ex.latent)
        return [row(ex, explainer.name, explainer.ctx, text=None, error=f"{type(e).__name__}: {e}")]


def explain(
    run_dir: str | Path,
    config: RunConfig,
    hookpoints: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Explain every latent (or ``latents``) of every sampled hookpoint; returns the path of
    ``explanations.parquet``. Everything is checked before the first request. One process at
    a time per run directory (runner/lock.py). ``force`` explains again and asks the LLM
    again (cached answers of earlier runs are not used)."""
    if force:
        config = forced_config(config)
    from autointerp.cost.budget import check_budget  # the cap: estimated before any request

    check_budget(run_dir, config, ["explain"], hookpoints, latents)
    with run_lock(run_dir, "explain"):
        return _explain(Path(run_dir), config, hookpoints, latents, force, progress)


def _plans(
    run_dir: Path, config: RunConfig, hps: Sequence[str], latents: Sequence[int] | None
) -> tuple[list[tuple[str, np.ndarray, Explainer]], str | None]:
    """(hookpoint, latents, explainer) of each hookpoint, and the backend the explainer uses."""
    probe = ExplainContext(config=config.explain, seed=config.seed, config_hash="")
    backend = make_explainer(probe).backend
    plans = []
    for hp in hps:
        ids = check_latents(run_dir, hp, latents)
        ctx = ExplainContext(
            config=config.explain,
            seed=config.seed,
            config_hash=explain_hash(config, run_dir, hp, backend),
            explanation_set=explanation_set(config, backend),
            score_config=config.score,
            run_dir=run_dir,
        )
        plans.append((hp, ids, make_explainer(ctx)))
    return plans, backend


def _explain(
    run_dir: Path,
    config: RunConfig,
    hookpoints: Sequence[str] | None,
    latents: Sequence[int] | None,
    force: bool,
    progress: bool,
) -> Path:
    hps = require_examples(run_dir, hookpoints)
    check_engine(config)
    for hp in hps:
        run_vocab(run_dir, config, hp)  # the subject model's tokenizer: found, before any work
    plans, backend = _plans(run_dir, config, hps, latents)
    table = PartTable(explanations_path(run_dir), KEY, SCHEMA)
    done = {(h, lat, c) for h, lat, c, _ in table.done_keys(redo_status="failed")}
    written = {(h, lat, c) for h, lat, c, _ in table.done_keys()}
    todo, drops = [], []
    for hp, ids, explainer in plans:
        chash = explainer.ctx.config_hash
        mine = ids if force else np.array([x for x in ids if (hp, int(x), chash) not in done])
        again = [int(x) for x in mine if (hp, int(x), chash) in written]  # forced or failed
        if again:
            drops.append(
                pl.DataFrame(
                    {"hookpoint": hp, "latent": again, "config_hash": chash},
                    schema={k: SCHEMA[k] for k in KEY[:3]},
                )
            )
        log.info(
            "%s: %d latents to explain (%d done, %d redone)",
            hp,
            len(mine),
            len(ids) - len(mine),
            len(again),
        )
        todo.append((hp, mine, explainer))
    if drops:
        table.drop(pl.concat(drops))
    total = sum(len(ids) for _, ids, _ in todo)
    workers = 1 if config.llm.backend == "vllm" else auto_workers(config, max(total, 1))
    if total and (workers > 1 or config.execution.engine == "ray"):
        keys = [(hp, int(x)) for hp, ids, _ in todo for x in ids]
        payloads = []
        for rng in split_ranges(keys, n_shards(config, workers)):
            by_hp: dict[str, list[int]] = {}
            for hp, lat in rng:
                by_hp.setdefault(hp, []).append(lat)
            payloads.append(sorted(by_hp.items()))
        with StageProgress("explain", total, None, progress) as bar:
            fn = "autointerp.explainers.run:explain_shard"
            run_sharded(run_dir, config, fn, payloads, workers, bar.update)
    elif total:
        recover(run_dir, config)
        run_loop(_run(run_dir, config, todo, table, backend, progress))
    out = table.close() or explanations_path(run_dir)
    record_stage(
        run_dir,
        "explain",
        config,
        ("explain",),
        explainer=config.explain.explainer,
        explanation_set=explanation_set(config, backend),
        explainer_llm=llm_settings(config, backend),
        explainer_settings=explainer_settings(config, backend),
        hookpoints=list(hps),
        latents=int(sum(len(ids) for _, ids, _ in plans)),
        force=force,
    )
    return out


def explain_shard(
    run_dir: Path,
    config: RunConfig,
    payload: list[tuple[str, list[int]]],
    on_latent: Callable[[], None],
    cache_shard: str,
) -> int:
    """A worker of sharded execution (runner/execute.py): explain ``payload`` (hookpoint,
    latents) in this process, writing part files only; returns the number of latents."""
    plans, backend = _plans(run_dir, config, [hp for hp, _ in payload], None)
    wanted = dict(payload)
    todo = [(hp, np.asarray(wanted[hp], dtype=np.int64), ex) for hp, _, ex in plans]
    table = PartTable(explanations_path(run_dir), KEY, SCHEMA)
    run_loop(_run(run_dir, config, todo, table, backend, False, on_latent, cache_shard))
    return sum(len(ids) for _, ids, _ in todo)


async def _run(
    run_dir: Path,
    config: RunConfig,
    todo: list[tuple[str, np.ndarray, Explainer]],
    table: PartTable,
    backend: str | None,
    progress: bool,
    on_latent: Callable[[], None] | None = None,
    cache_shard: str | None = None,
) -> None:
    total = sum(len(ids) for _, ids, _ in todo)
    if total == 0:
        return
    client = open_client(config, run_dir, backend, cache_shard)
    by_hp = {hp: explainer for hp, _, explainer in todo}

    def items() -> Iterator[LatentExamples]:
        for hp, ids, explainer in todo:
            if len(ids):
                vocab = run_vocab(run_dir, config, hp)
                yield from iter_latent_examples(run_dir, hp, vocab, explainer.splits, ids)

    limit = max(8, 2 * config.llm.concurrency)
    if config.llm.batch.enabled:  # a batch job should hold many latents' requests
        limit = config.llm.batch.latents_in_flight
    try:
        with StageProgress("explain", total, client.usage, progress) as bar:

            def done(ex: LatentExamples, rows: list[dict[str, Any]]) -> None:
                table.add(rows)
                bar.update()
                if on_latent is not None:
                    on_latent()

            await stream(items(), lambda ex: _safe(by_hp[ex.hookpoint], ex, client), done, limit)
    finally:
        table.flush()
        await client.aclose()
        record_usage(run_dir, "explain", client, latents=total)
