"""``calibrate``: how well does a judge separate true from wrong explanations?

A planted coder (latents that are rules over tokens and context, each with a known true
explanation; docs/planted.md) is cached over the bundled Python source with the run's subject
model, sampled, and every latent is scored twice with the configured judge: with its true
explanation and with another latent's (a fixed derangement). Per scorer and headline metric,
the AUROC over latents of "true vs shuffled" says how well that scorer, with that judge,
tells a right explanation from a wrong one; token latents and context latents are reported
apart (a judge that reads only tokens cannot see context). A check of a new judge model
before a paid run. Output: ``RUN_DIR/calibration.parquet``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.config import RunConfig
from autointerp.explainers.base import SCHEMA, explanation_id
from autointerp.scorers.metrics import binary_metrics
from autointerp.scorers.registry import HEADLINE

log = logging.getLogger(__name__)
CONTEXT_KINDS = ("regex", "string_literal", "after")


def planted_config(config: RunConfig, run_dir: Path, n_tokens: int) -> RunConfig:
    """The run's subject model and judge; the planted coder; the bundled Python source."""
    cfg = config.model_copy(deep=True)
    cfg.run_dir = run_dir
    cfg.coder.path = str(run_dir / "planted-coder")
    cfg.dataset.source = "stdlib"
    cfg.cache.n_tokens = n_tokens
    cfg.cache.hookpoints = cfg.cache.hookpoints[:1]
    return cfg


def planted_explanations(hookpoint: str, explanations: Sequence[str]) -> pl.DataFrame:
    """Each latent's true explanation and, as ``planted:shuffled``, latent i+1's."""
    n = len(explanations)
    rows = []
    for latent in range(n):
        for kind, text in (
            ("true", explanations[latent]),
            ("shuffled", explanations[(latent + 1) % n]),
        ):
            rows.append(
                {
                    "hookpoint": hookpoint,
                    "latent": latent,
                    "explanation_id": explanation_id(text),
                    "explainer": f"planted:{kind}",
                    "candidate": 0,
                    "selected": True,
                    "status": "ok",
                    "explanation": text,
                    "config_hash": "planted",
                    "source": "planted",
                }
            )
    return pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows[0]})


def separation(scores: pl.DataFrame, kinds: dict[int, str], seed: int = 0) -> pl.DataFrame:
    """Per scorer, metric and latent group: AUROC (with CI) of the metric for telling a
    latent's true explanation from a shuffled one, and the two means."""
    out = []
    for scorer, metrics in HEADLINE.items():
        sub = scores.filter(pl.col("scorer") == scorer)
        if sub.is_empty():
            continue
        sub = sub.with_columns(
            group=pl.col("latent").replace_strict(kinds, default="token", return_dtype=pl.String),
            is_true=pl.col("explainer") == "planted:true",
        )
        for metric in metrics:
            for group in ("token", "context", "all"):
                g = sub if group == "all" else sub.filter(pl.col("group") == group)
                g = g.filter(pl.col(metric).is_not_nan() & pl.col(metric).is_not_null())
                if g.is_empty():
                    continue
                truth = g["is_true"].to_numpy()
                values = g[metric].to_numpy().astype(np.float64)
                m = binary_metrics(truth, values > np.median(values), values, seed=seed)
                out.append(
                    {
                        "scorer": scorer,
                        "metric": metric,
                        "latents": group,
                        "auroc": m["auroc"],
                        "auroc_lo": m["auroc_lo"],
                        "auroc_hi": m["auroc_hi"],
                        "mean_true": float(values[truth].mean()) if truth.any() else np.nan,
                        "mean_shuffled": float(values[~truth].mean()) if (~truth).any() else np.nan,
                        "n_true": int(truth.sum()),
                        "n_shuffled": int((~truth).sum()),
                    }
                )
    return pl.DataFrame(out)


def calibrate(
    config: RunConfig,
    run_dir: str | Path | None = None,
    scorers: Sequence[str] | None = None,
    n_tokens: int = 131_072,
    progress: bool = True,
    latents: Sequence[int] | None = None,
) -> pl.DataFrame:
    """Cache, sample and score the planted set with the configured judge; returns (and writes
    to ``calibration.parquet``) the separation table."""
    from autointerp.cache import cache_activations
    from autointerp.coders.planted import DEFAULT_RULES, write_planted_coder
    from autointerp.sampling.build import build_examples
    from autointerp.scorers.run import score

    bad = sorted(set(latents or []) - set(range(len(DEFAULT_RULES))))
    if bad or (latents is not None and len(set(latents)) < 2):
        raise ValueError(
            f"--latents must name at least 2 of the planted latents 0..{len(DEFAULT_RULES) - 1}"
            + (f" (got {bad})" if bad else "")
        )
    run_dir = Path(run_dir or Path(config.run_dir) / "calibrate")
    cfg = planted_config(config, run_dir, n_tokens)
    names = list(scorers or cfg.score.scorers)
    from autointerp.scorers.registry import check_scorers

    check_scorers(names, cfg.llm.backend, cfg.score.simulation.mode, cfg.score.surprisal.backend)
    folder = write_planted_coder(run_dir / "planted-coder", DEFAULT_RULES)
    [hookpoint_dir] = cache_activations(cfg, progress=progress).values()
    hookpoint = hookpoint_dir.name
    build_examples(run_dir, cfg, progress=progress)
    expl = planted_explanations(hookpoint, [r.explanation for r in DEFAULT_RULES])
    if latents is not None:  # a subset (a slow judge): each still against latent i+1's text
        expl = expl.filter(pl.col("latent").is_in(list(latents)))
    paths = score(run_dir, cfg, scorers=names, explanations=expl, progress=progress)
    scores = pl.concat([pl.read_parquet(p) for p in paths.values()], how="diagonal_relaxed")
    kinds = {i: "context" for i, r in enumerate(DEFAULT_RULES) if r.kind in CONTEXT_KINDS}
    table = separation(scores, kinds, seed=cfg.seed).with_columns(
        judge=pl.lit(cfg.llm.model), judge_endpoint=pl.lit(cfg.llm.endpoint, pl.String)
    )
    table.write_parquet(run_dir / "calibration.parquet")
    from autointerp.runner.provenance import record_stage

    record_stage(
        run_dir,
        "calibrate",
        cfg,
        ("score",),
        scorers=names,
        n_tokens=n_tokens,
        latents=len(DEFAULT_RULES),
    )
    log.info("planted coder in %s; calibration in %s", folder, run_dir / "calibration.parquet")
    return table


def format_calibration(table: pl.DataFrame) -> list[str]:
    lines = [
        f"{'scorer':<11} {'metric':<18} {'latents':<8} {'AUROC true vs shuffled':<26} "
        "mean true  mean shuffled"
    ]
    for r in table.iter_rows(named=True):
        ci = f"{r['auroc']:.3f} [{r['auroc_lo']:.3f}, {r['auroc_hi']:.3f}]"
        lines.append(
            f"{r['scorer']:<11} {r['metric']:<18} {r['latents']:<8} {ci:<26} "
            f"{r['mean_true']:>9.3f}  {r['mean_shuffled']:>13.3f}"
        )
    return lines
