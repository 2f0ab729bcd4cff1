"""``score``: stream every (latent, explanation) through the scorers; write
``scores/<scorer>.parquet`` (one row per latent and explanation) and
``scores/<scorer>.examples.parquet`` (one row per example). Columns in docs/score.md.
Resumable: a (hookpoint, latent, explanation_id, scorer config) already scored is skipped; one
whose row is ``failed`` is scored again (its old rows replaced; answers that succeeded come from
the response cache)."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from autointerp.config import RunConfig
from autointerp.explainers.run import check_latents, explanations_path, forced_config
from autointerp.runner.examples import LatentExamples, examples_hash, iter_latent_examples
from autointerp.runner.execute import check_engine, recover
from autointerp.runner.lock import run_lock
from autointerp.runner.loop import run as run_loop
from autointerp.runner.progress import StageProgress
from autointerp.runner.provenance import record_stage
from autointerp.runner.session import open_client, run_vocab
from autointerp.runner.stream import stream
from autointerp.runner.usage import record_usage
from autointerp.scorers.audit import run_audit
from autointerp.scorers.base import ScoreContext, Scorer, ScoreResult
from autointerp.scorers.outputs import KEY, Explanation, ScoreOutputs, set_of
from autointerp.scorers.parallel import n_workers, run_parallel
from autointerp.scorers.registry import check_scorers, make_scorer

log = logging.getLogger(__name__)


def load_explanations(run_dir: Path) -> pl.DataFrame:
    """The selected explanation of every latent (of every explainer config) in the run."""
    path = explanations_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(
            f"no {path.name} in {run_dir}: run `autointerp explain {run_dir}` first, or "
            "`autointerp rescore` with a file of explanations"
        )
    return pl.read_parquet(path).filter(pl.col("selected"))


async def _score_one(scorer: Scorer, ex: LatentExamples, e: Explanation, llm: Any) -> ScoreResult:
    if e.get("status") != "ok" or not e.get("explanation"):
        status = e.get("status") if e.get("status") in ("skipped", "failed") else "failed"
        return ScoreResult(status=status, error=f"explanation {status}: {e.get('error')}")
    if ex.skipped is not None:
        return ScoreResult(status="skipped", error=f"no examples: {ex.skipped}")
    try:
        return await scorer.score(ex, e["explanation"], llm)
    except Exception as err:  # one latent's bug must not lose the rest of the run
        log.exception("scorer %s failed on latent %s", scorer.name, ex.latent)
        return ScoreResult(status="failed", error=f"{type(err).__name__}: {err}")


def score(
    run_dir: str | Path,
    config: RunConfig,
    scorers: Sequence[str] | None = None,
    hookpoints: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    explanations: pl.DataFrame | None = None,
    force: bool = False,
    progress: bool = True,
    stage: str = "score",
    audit: bool = True,
) -> dict[str, Path]:
    """Score explanations (default: the selected ones in ``explanations.parquet``) with each
    scorer on the test split; returns ``{scorer: scores/<scorer>.parquet}``. One process at a
    time per run directory (runner/lock.py). ``force`` scores again and asks the judge again
    (cached answers of earlier runs are not used). What it ran with is recorded as ``stage``
    (runner/provenance.py). ``audit=False`` leaves the shortcut audit to the caller (the
    pipeline writes it beside the report: ``build_report(audit=...)``, seed
    :func:`audit_seed`)."""
    if force:
        config = forced_config(config)
    with run_lock(run_dir, "score"):
        return _score(
            run_dir, config, scorers, hookpoints, latents, explanations, force, progress, stage,
            audit,
        )  # fmt: skip


def _score(
    run_dir: str | Path,
    config: RunConfig,
    scorers: Sequence[str] | None,
    hookpoints: Sequence[str] | None,
    latents: Sequence[int] | None,
    explanations: pl.DataFrame | None,
    force: bool,
    progress: bool,
    stage: str,
    audit: bool = True,
) -> dict[str, Path]:
    run_dir = Path(run_dir)
    check_engine(config)
    names = check_scorers(
        list(scorers or config.score.scorers),
        config.llm.backend,
        config.score.simulation.mode,
        config.score.surprisal.backend,
    )
    expl = load_explanations(run_dir) if explanations is None else explanations
    from autointerp.cost.budget import check_budget  # the cap: estimated before any request

    check_budget(run_dir, config, ["score"], hookpoints, latents, names, expl)
    if hookpoints:
        expl = expl.filter(pl.col("hookpoint").is_in([h.replace(":", "@") for h in hookpoints]))
    if latents is not None:
        expl = expl.filter(pl.col("latent").is_in(list(latents)))
    outputs = ScoreOutputs(run_dir, names, config.score.flush_rows)
    done = {n: outputs.done(n) for n in names}
    if "explanation_set" not in expl.columns:
        expl = expl.with_columns(pl.lit(None, pl.String).alias("explanation_set"))
    expl = expl.with_columns(
        pl.col("explanation_set").fill_null(
            pl.concat_str(pl.col("explainer"), pl.col("config_hash"), separator=":")
        )
    )
    # a text in two explanation sets is scored (and counted) in each; answers are cached
    expl = expl.unique(
        ["hookpoint", "latent", "explanation_id", "explanation_set"],
        keep="first",
        maintain_order=True,
    )
    work: dict[str, dict[int, list[tuple[Explanation, Scorer, str]]]] = defaultdict(dict)
    forced: dict[str, list[dict[str, Any]]] = defaultdict(list)
    n_pairs = 0
    used: dict[str, dict[str, Any]] = {}
    for hp in sorted(expl["hookpoint"].unique().to_list()):
        sub = expl.filter(pl.col("hookpoint") == hp)
        check_latents(run_dir, hp, sub["latent"].unique().to_list())
        run_vocab(run_dir, config, hp)  # the subject model's tokenizer: found, before any work
        ctx = _context(run_dir, config, hp)
        built = [(make_scorer(n, ctx), None) for n in names]
        for scorer, _ in built:
            chash = scorer.config_hash()
            used.setdefault(
                scorer.name,
                {
                    "judge": scorer.model,
                    "judge_endpoint": scorer.judge_endpoint,
                    "scorer_config": scorer.scorer_config(),
                    "settings": {k: v for k, v in scorer.settings().items() if k != "examples"},
                    "config_hashes": {},
                },
            )["config_hashes"][hp] = chash
            for e in sub.iter_rows(named=True):
                key = (hp, int(e["latent"]), e["explanation_id"], set_of(e), chash)
                finished, written = done[scorer.name]
                if key in finished and not force:
                    continue
                if key in written:  # forced, or failed before: the old row goes
                    forced[scorer.name].append(dict(zip(KEY, key, strict=True)))
                work[hp].setdefault(int(e["latent"]), []).append((e, scorer, chash))
                n_pairs += 1
    for name, keys in forced.items():
        frame = pl.DataFrame(
            keys,
            schema={
                "hookpoint": pl.String,
                "latent": pl.Int64,
                "explanation_id": pl.String,
                "explanation_set": pl.String,
                "config_hash": pl.String,
            },
        )
        frame = frame.with_columns(pl.col("latent").cast(pl.Int32))
        outputs.latent[name].drop(frame)
        outputs.examples[name].drop(frame)
    log.info("%d (latent, explanation, scorer) to score", n_pairs)
    if n_pairs:
        _prepare(run_dir, config, work)
        _execute(run_dir, config, work, outputs, progress)
    paths = outputs.close()
    # the shortcut audit, always on: once, over every latent the files hold; an audit newer
    # than its examples file is kept (a rerun that scores nothing rewrites nothing, and one
    # after a run killed before its report wrote the audit writes it)
    if audit:
        run_audit(run_dir, names, seed=audit_seed(config))
    record_stage(
        run_dir,
        stage,
        config,
        ("score",),
        scorers=used,
        explanation_sets=sorted(set(expl["explanation_set"].to_list())),
        scored=n_pairs,
        force=force,
    )
    return paths


def audit_seed(config: RunConfig) -> int:
    """The seed of the shortcut audit's folds and subsamples (``score.seed``, else ``seed``)."""
    return config.seed if config.score.seed is None else config.score.seed


def _prepare(
    run_dir: Path,
    config: RunConfig,
    work: dict[str, dict[int, list[tuple[Explanation, Scorer, str]]]],
) -> None:
    """Each scorer's optional pre-pass (``Scorer.prepare``), once per hookpoint, over the
    latents and explanations it is about to score."""
    for hp, by_latent in work.items():
        found: dict[int, tuple[Scorer, list[int], list[str]]] = {}
        for latent, items in by_latent.items():
            for e, scorer, _ in items:
                entry = found.setdefault(id(scorer), (scorer, [], []))
                entry[1].append(latent)
                entry[2].append(e.get("explanation") or "")
        for scorer, latents, texts in found.values():
            scorer.prepare(run_dir, config, hp, sorted(set(latents)), texts)


def _context(run_dir: Path, config: RunConfig, hookpoint: str) -> ScoreContext:
    seed = config.seed if config.score.seed is None else config.score.seed
    return ScoreContext(
        config=config.score,
        seed=seed,
        llm_model=config.llm.model,
        backend=config.llm.backend,
        examples_hash=examples_hash(run_dir, hookpoint),
        endpoint=config.llm.endpoint,
    )


def _execute(
    run_dir: Path,
    config: RunConfig,
    work: dict[str, dict[int, list[tuple[Explanation, Scorer, str]]]],
    outputs: ScoreOutputs,
    progress: bool,
) -> None:
    """In this process, or in several (``score.workers``; see scorers/parallel.py)."""
    n_latents = sum(len(v) for v in work.values())
    names = {s.name for by in work.values() for items in by.values() for _, s, _ in items}
    workers = n_workers(config, n_latents, names)
    if workers <= 1 and config.execution.engine == "local":
        recover(run_dir, config)
        run_loop(_run(run_dir, config, work, outputs, progress))
        return
    jobs = [
        (hp, latent, e, scorer.name, chash)
        for hp, by_latent in work.items()
        for latent, items in by_latent.items()
        for e, scorer, chash in items
    ]
    with StageProgress("score", n_latents, None, progress) as bar:
        run_parallel(run_dir, config, jobs, workers, bar.update)


def run_jobs(
    run_dir: Path, config: RunConfig, jobs: list[Any], on_latent: Any, shard: str | None = None
) -> int:
    """Score ``jobs`` (hookpoint, latent, explanation, scorer name, config hash) in this
    process, writing part files only (a worker of scorers/parallel.py); returns the number of
    latents."""
    names = sorted({j[3] for j in jobs})
    outputs = ScoreOutputs(run_dir, names, config.score.flush_rows)
    built: dict[tuple[str, str], Scorer] = {}
    work: dict[str, dict[int, list[tuple[Explanation, Scorer, str]]]] = defaultdict(dict)
    for hp, latent, e, name, chash in jobs:
        if (hp, name) not in built:
            built[(hp, name)] = make_scorer(name, _context(run_dir, config, hp))
        scorer = built[(hp, name)]
        if scorer.config_hash() != chash:
            raise RuntimeError(f"{name}: worker config hash differs from the parent's")
        work[hp].setdefault(latent, []).append((e, scorer, chash))
    _prepare(run_dir, config, work)
    run_loop(_run(run_dir, config, work, outputs, False, on_latent, shard))
    return sum(len(v) for v in work.values())


async def _run(
    run_dir: Path,
    config: RunConfig,
    work: dict[str, dict[int, list[tuple[Explanation, Scorer, str]]]],
    outputs: ScoreOutputs,
    progress: bool,
    on_latent: Any = None,
    cache_shard: str | None = None,
) -> None:
    client = open_client(config, run_dir, cache_shard=cache_shard)
    total = sum(len(v) for v in work.values())

    def items() -> Iterator[LatentExamples]:
        for hp, by_latent in work.items():
            vocab = run_vocab(run_dir, config, hp)
            yield from iter_latent_examples(run_dir, hp, vocab, ["test"], sorted(by_latent))

    async def one(ex: LatentExamples) -> list[ScoreResult]:
        jobs = work[ex.hookpoint][ex.latent]
        return list(await asyncio.gather(*(_score_one(s, ex, e, client) for e, s, _ in jobs)))

    limit = config.score.latents_in_flight or max(8, 4 * config.llm.concurrency)
    if config.llm.batch.enabled and not config.score.latents_in_flight:
        limit = config.llm.batch.latents_in_flight  # a batch job holds many latents
    try:
        with StageProgress("score", total, client.usage, progress) as bar:

            def done(ex: LatentExamples, results: list[ScoreResult]) -> None:
                for (e, scorer, chash), res in zip(
                    work[ex.hookpoint][ex.latent], results, strict=True
                ):
                    outputs.add(scorer, chash, e, res)
                bar.update()
                if on_latent is not None:
                    on_latent()

            await stream(items(), one, done, limit)
    finally:
        outputs.flush()
        await client.aclose()
        record_usage(run_dir, "score", client, latents=total)
