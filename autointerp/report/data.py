"""The tables a report shows, gathered from a run's files: no display code here.

Everything is polars frames or plain dicts, so a notebook can use them directly:
``run_summary`` (model, coder, tokens, latents explained/skipped/failed, LLM usage),
``score_tables`` (one row per latent and explanation for each scorer, its main config),
``latent_index`` (the browser's table), ``agreement`` (Spearman between scorers),
(``details.latent_details``: a range of latents' examples, explanations, scores, neighbours).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autointerp.scorers.registry import HEADLINE

log = logging.getLogger(__name__)

EXPLANATION_FILES = ("explanations.parquet", "imported_explanations.parquet")
STATUS_RANK = {"ok": 0, "skipped": 1, "failed": 2}


def hookpoints(run_dir: Path) -> list[str]:
    """Hookpoints with a complete cache (``meta.json``) or an examples file, sorted."""
    names = {p.parent.name for p in (run_dir / "cache").glob("*/meta.json")}
    names |= {p.stem for p in (run_dir / "examples").glob("*.parquet")}
    return sorted(names)


def cache_meta(run_dir: Path, hookpoint: str) -> dict[str, Any]:
    path = run_dir / "cache" / hookpoint / "meta.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def latent_stats(run_dir: Path, hookpoint: str) -> pl.DataFrame:
    """``latent``, ``frequency``, ``n_active``, ``max`` of one hookpoint (empty if no cache)."""
    path = run_dir / "cache" / hookpoint / "latent_stats.parquet"
    cols = {"latent": pl.Int32, "frequency": pl.Float64, "n_active": pl.Int64, "max": pl.Float32}
    if not path.is_file():
        return pl.DataFrame(schema=cols)
    return pl.read_parquet(path, columns=list(cols)).cast(cols)  # type: ignore[arg-type]


def explanations(run_dir: Path) -> pl.DataFrame:
    """All explanation rows (own and imported), with the columns both files share."""
    frames = [pl.read_parquet(run_dir / f) for f in EXPLANATION_FILES if (run_dir / f).is_file()]
    if not frames:
        return pl.DataFrame(
            schema={
                "hookpoint": pl.String,
                "latent": pl.Int32,
                "explanation_id": pl.String,
                "explainer": pl.String,
                "candidate": pl.Int16,
                "selected": pl.Boolean,
                "status": pl.String,
                "explanation": pl.String,
                "selection_score": pl.Float64,
                "error": pl.String,
            }
        )
    df = pl.concat(frames, how="diagonal_relaxed")
    if "selection_score" not in df.columns:
        df = df.with_columns(selection_score=pl.lit(None, pl.Float64))
    return df


def llm_usage(run_dir: Path) -> pl.DataFrame:
    """``llm_usage.jsonl`` as a table (one row per stage run; empty if none)."""
    path = run_dir / "llm_usage.jsonl"
    rows = (
        [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
        if path.is_file()
        else []
    )
    return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"stage": pl.String})


def run_summary(run_dir: Path) -> dict[str, Any]:
    """Model, coder and token counts per hookpoint; explanation counts per explainer (selected
    rows); LLM requests, tokens and cost per stage and in all."""
    hps = []
    for hp in hookpoints(run_dir):
        meta = cache_meta(run_dir, hp)
        hps.append(
            {
                "hookpoint": hp,
                "model": meta.get("model"),
                "coder": meta.get("coder") or None,
                "coder_format": meta.get("coder_format"),
                "n_latents": meta.get("n_latents"),
                "n_tokens": meta.get("n_tokens"),
                "ctx_len": meta.get("ctx_len"),
            }
        )
    expl = explanations(run_dir).filter(pl.col("selected"))
    by_explainer = (
        expl.group_by("explainer")
        .agg(
            latents=pl.struct("hookpoint", "latent").n_unique(),
            ok=(pl.col("status") == "ok").sum(),
            skipped=(pl.col("status") == "skipped").sum(),
            failed=(pl.col("status") == "failed").sum(),
        )
        .sort("explainer")
    )
    usage = llm_usage(run_dir)
    nums = ["requests", "cached", "errors", "prompt_tokens", "completion_tokens", "cost_usd"]
    nums = [c for c in nums if c in usage.columns]
    per_stage = (
        usage.group_by("stage", maintain_order=True).agg(
            pl.len().alias("runs"), *[pl.col(c).sum() for c in nums]
        )
        if nums
        else pl.DataFrame()
    )
    total = {c: usage[c].sum() for c in nums}
    return {
        "run_dir": str(run_dir),
        "hookpoints": hps,
        "explainers": by_explainer.to_dicts(),
        "llm_stages": per_stage.to_dicts(),
        "llm_total": total,
        "llm_models": sorted({str(m) for m in usage["model"]}) if "model" in usage.columns else [],
    }


def scorer_names(run_dir: Path) -> list[str]:
    """Scorers with a scores file and known headline metrics, in registry order."""
    return [n for n in HEADLINE if (run_dir / "scores" / f"{n}.parquet").is_file()]


def main_metric(scorer: str) -> str:
    return HEADLINE[scorer][0]


def score_tables(run_dir: Path) -> dict[str, pl.DataFrame]:
    """Per scorer, its rows under its main config (the ``config_hash`` with the most ``ok``
    rows), one per (hookpoint, latent, explanation_id): the ``ok`` row if there is one."""
    out = {}
    for name in scorer_names(run_dir):
        df = pl.read_parquet(run_dir / "scores" / f"{name}.parquet")
        if df.is_empty():
            continue
        counts = df.group_by("config_hash").agg(ok=(pl.col("status") == "ok").sum())
        main = counts.sort(["ok", "config_hash"], descending=[True, False])["config_hash"][0]
        out[name] = (
            df.filter(pl.col("config_hash") == main)
            .sort(pl.col("status").replace_strict(STATUS_RANK, default=3))
            .unique(["hookpoint", "latent", "explanation_id"], keep="first")
            .sort(["hookpoint", "latent", "explanation_id"])
        )
    return out


def latent_index(run_dir: Path, scores: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """One row per selected explanation (and per latent without one): ``hookpoint``,
    ``latent``, ``frequency``, ``explainer``, ``explanation_id``, ``explanation``, ``status``,
    then each scorer's main metric (NaN when not scored ``ok``)."""
    keys = ["hookpoint", "latent", "explanation_id"]
    expl = (
        explanations(run_dir)
        .filter(pl.col("selected"))
        .select(*keys, "explainer", "explanation", "status")
        .unique(keys, keep="first", maintain_order=True)
    )
    stats = [
        latent_stats(run_dir, hp).with_columns(hookpoint=pl.lit(hp)) for hp in hookpoints(run_dir)
    ]
    freq = (
        pl.concat(stats).select("hookpoint", "latent", "frequency")
        if stats
        else pl.DataFrame(
            schema={"hookpoint": pl.String, "latent": pl.Int32, "frequency": pl.Float64}
        )
    )
    table = expl.join(freq, on=["hookpoint", "latent"], how="left")
    for name, df in scores.items():
        metric = main_metric(name)
        part = df.select(
            *keys,
            pl.when(pl.col("status") == "ok").then(pl.col(metric)).otherwise(None).alias(name),
        )
        table = table.join(part, on=keys, how="left")
    return table.sort(["hookpoint", "latent", "explainer"])


def agreement(index: pl.DataFrame, scorers: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation between scorers' main metrics over the explanations both scored,
    and the number of such explanations: two ``len(scorers)`` square matrices."""
    k = len(scorers)
    rho = np.full((k, k), np.nan)
    n = np.zeros((k, k), dtype=np.int64)
    for i, a in enumerate(scorers):
        for j, b in enumerate(scorers):
            pair = index.select(x=pl.col(a), y=pl.col(b)).drop_nulls()
            both = pair.filter(pl.col("x").is_not_nan() & pl.col("y").is_not_nan())
            n[i, j] = both.height
            if both.height >= 3:
                r = both.select(pl.corr("x", "y", method="spearman")).item()
                rho[i, j] = np.nan if r is None else float(r)
    return rho, n
