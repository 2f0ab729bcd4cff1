"""``explain``: stream every latent's train windows through the explainer, write
``explanations.parquet`` (columns in docs/explain.md). Resumable: latents already explained
with the same config are skipped (``force`` redoes them), latents whose rows failed are
explained again (old rows replaced); the response cache covers a run killed between a request
and its row."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
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
from autointerp.runner.loop import run as run_loop
from autointerp.runner.progress import StageProgress
from autointerp.runner.session import open_client, run_vocab
from autointerp.runner.stream import stream
from autointerp.runner.table import PartTable
from autointerp.runner.usage import record_usage

log = logging.getLogger(__name__)
KEY = ["hookpoint", "latent", "config_hash", "candidate"]


def explanations_path(run_dir: Path) -> Path:
    return Path(run_dir) / "explanations.parquet"


def explain_hash(config: RunConfig, run_dir: Path, hookpoint: str, backend: str | None) -> str:
    """Hash of what a latent's explanation depends on: explainer settings, model, examples."""
    payload: dict[str, Any] = {
        "explain": config.explain.used_by(config.explain.explainer),
        "llm": backend or config.llm.model,
        "examples": examples_hash(run_dir, hookpoint),
        "seed": config.seed,
    }
    if config.explain.explainer in ("best-of-k", "iterative"):
        payload["selection"] = config.score.detection.model_dump(mode="json")
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


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
    ``explanations.parquet``. Everything is checked before the first request."""
    run_dir = Path(run_dir)
    hps = require_examples(run_dir, hookpoints)
    from autointerp.cost.budget import check_budget  # the cap: estimated before any request

    check_budget(run_dir, config, ["explain"], hookpoints, latents)
    probe = ExplainContext(config=config.explain, seed=config.seed, config_hash="")
    backend = make_explainer(probe).backend
    plans = []
    for hp in hps:
        ids = check_latents(run_dir, hp, latents)
        ctx = ExplainContext(
            config=config.explain,
            seed=config.seed,
            config_hash=explain_hash(config, run_dir, hp, backend),
            score_config=config.score,
            run_dir=run_dir,
        )
        plans.append((hp, ids, make_explainer(ctx)))
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
    run_loop(_run(run_dir, config, todo, table, backend, progress))
    return table.close() or explanations_path(run_dir)


async def _run(
    run_dir: Path,
    config: RunConfig,
    todo: list[tuple[str, np.ndarray, Explainer]],
    table: PartTable,
    backend: str | None,
    progress: bool,
) -> None:
    total = sum(len(ids) for _, ids, _ in todo)
    if total == 0:
        return
    client = open_client(config, run_dir, backend)
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

            await stream(items(), lambda ex: _safe(by_hp[ex.hookpoint], ex, client), done, limit)
    finally:
        table.flush()
        await client.aclose()
        record_usage(run_dir, "explain", client, latents=total)
