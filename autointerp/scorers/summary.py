"""Run summary: per (scorer, scorer config, explanation set, judge), the mean of each headline
metric over latents with a bootstrap CI and the number of latents it covers (``n``), the mean
chance level beside it, how many latents were scored, skipped and failed, and the same mean
for each random-baseline control run (``RUN_DIR/controls/<control>/``, autointerp.controls)
when there is one, joined on the same scorer config and explanation set. Two explanation
sets (e.g. one explainer with two models) are never mixed in one mean."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from autointerp.scorers.metrics import mean_ci
from autointerp.scorers.registry import HEADLINE

COLUMNS = [
    "scorer",
    "explainer",
    "explanation_set",
    "judge",
    "judge_endpoint",
    "config_hash",
    "scorer_config",
    "metric",
    "mean",
    "ci_lo",
    "ci_hi",
    "n",
    "chance",
    "latents",
    "scored",
    "skipped",
    "failed",
    "examples_lost",
    "control",
    "control_mean",
    "control_ci_lo",
    "control_ci_hi",
    "control_n",
    "control_scored",
]
CONTROL_STATS = ["control_mean", "control_ci_lo", "control_ci_hi", "control_n", "control_scored"]
GROUP = ["explanation_set", "config_hash", "model", "judge_endpoint"]
CONTROL_KEY = ["scorer", "scorer_config", "explanation_set", "metric"]


def summarize(run_dir: str | Path, scorers: list[str] | None = None, seed: int = 0) -> pl.DataFrame:
    """One row per (scorer, explanation set, scorer config_hash, judge, headline metric) and
    control run (``control`` null when there is none); columns in docs/score.md. A latent
    counts once per group: its ``ok`` row if it has one (a latent re-explained after a
    failure keeps its old failed row in the table). A control is joined on the same scorer
    settings and judge (``scorer_config``) and explanation set."""
    df = _summarize(run_dir, scorers, seed)
    controls = Path(run_dir) / "controls"
    found = []
    for d in sorted(controls.iterdir()) if controls.is_dir() else []:
        c = _summarize(d, scorers, seed)
        if c.height:
            # the control's group with the most scored latents per join key
            c = c.sort("scored", descending=True, maintain_order=True).unique(
                CONTROL_KEY, keep="first", maintain_order=True
            )
            found.append(
                c.select(
                    *CONTROL_KEY,
                    pl.lit(d.name).alias("control"),
                    pl.col("mean").alias("control_mean"),
                    pl.col("ci_lo").alias("control_ci_lo"),
                    pl.col("ci_hi").alias("control_ci_hi"),
                    pl.col("n").cast(pl.Int64).alias("control_n"),
                    pl.col("scored").cast(pl.Int64).alias("control_scored"),
                )
            )
    if not df.height:
        return df
    if not found:
        return df.with_columns(
            pl.lit(None, pl.String).alias("control"),
            *[pl.lit(None, pl.Float64).alias(c) for c in CONTROL_STATS[:3]],
            *[pl.lit(None, pl.Int64).alias(c) for c in CONTROL_STATS[3:]],
        ).select(COLUMNS)
    joined = df.join(pl.concat(found), on=CONTROL_KEY, how="left", nulls_equal=True)
    return joined.select(COLUMNS)


def _summarize(run_dir: str | Path, scorers: list[str] | None, seed: int) -> pl.DataFrame:
    folder = Path(run_dir) / "scores"
    rows = []
    for name, metrics in HEADLINE.items():
        path = folder / f"{name}.parquet"
        if (scorers and name not in scorers) or not path.is_file():
            continue
        rank = {"ok": 0, "skipped": 1, "failed": 2}
        df = _provenance(pl.read_parquet(path))
        df = (
            df.sort(pl.col("status").replace_strict(rank, default=3))
            .unique([*GROUP, "hookpoint", "latent"], keep="first")
            .sort([*GROUP, "hookpoint", "latent"], nulls_last=True)
        )
        for (eset, chash, judge, endpoint), g in df.group_by(GROUP, maintain_order=True):
            ok = g.filter(pl.col("status") == "ok")
            counts = {
                "latents": g.select(["hookpoint", "latent"]).unique().height,
                "scored": ok.height,
                "skipped": g.filter(pl.col("status") == "skipped").height,
                "failed": g.filter(pl.col("status") == "failed").height,
                "examples_lost": int(g["n_lost"].sum()),
            }
            explainers = sorted({str(x) for x in g["explainer"].drop_nulls()})
            for metric in metrics:
                values = ok[metric].to_numpy() if metric in ok.columns else np.zeros(0)
                values = values.astype(np.float64)
                mean, lo, hi = mean_ci(values, seed=seed)
                chance_col = f"{metric}_chance"
                chance = (
                    float(np.nanmean(ok[chance_col].to_numpy()))
                    if chance_col in ok.columns and ok.height
                    else float("nan")
                )
                rows.append(
                    {
                        "scorer": name,
                        "explainer": "+".join(explainers) or None,
                        "explanation_set": eset,
                        "judge": judge,
                        "judge_endpoint": endpoint,
                        "config_hash": chash,
                        "scorer_config": g["scorer_config"].drop_nulls().first(),
                        "metric": metric,
                        "mean": mean,
                        "ci_lo": lo,
                        "ci_hi": hi,
                        "n": int(np.isfinite(values).sum()),
                        "chance": chance,
                        **counts,
                    }
                )
    strings = ("explainer", "explanation_set", "judge", "judge_endpoint", "scorer_config")
    return (
        pl.DataFrame(
            rows,
            schema_overrides={
                **{c: pl.Float64 for c in ("mean", "ci_lo", "ci_hi", "chance")},
                **{c: pl.String for c in strings},
            },
        )
        if rows
        else pl.DataFrame(schema={c: pl.String for c in COLUMNS})
    )


def _provenance(df: pl.DataFrame) -> pl.DataFrame:
    """Score rows with the provenance columns (rows written before they existed: the
    explanation set is their explainer's name, the judge endpoint and scorer config null)."""
    fill = {
        "explanation_set": pl.col("explainer") if "explainer" in df.columns else pl.lit(None),
        "judge_endpoint": pl.lit(None),
        "scorer_config": pl.lit(None),
        "model": pl.lit(None),
    }
    for col, value in fill.items():
        if col not in df.columns:
            df = df.with_columns(value.cast(pl.String).alias(col))
    return df


def format_summary(df: pl.DataFrame) -> list[str]:
    """Plain-text lines of a summary table (what ``autointerp score`` prints)."""
    if df.is_empty():
        return ["(no scores yet)"]
    lines = [
        f"{'scorer':<11} {'explainer':<18} {'set':<7} {'judge':<22} {'config':<7} "
        f"{'metric':<18} {'mean [95% CI]':<22} {'n':>5} {'chance':>7}  "
        f"{'scored/skipped/failed':<22} lost"
        + ("  control: mean [95% CI] (n)" if df["control"].is_not_null().any() else "")
    ]
    for r in df.iter_rows(named=True):
        ci = f"{r['mean']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
        counts = f"{r['scored']}/{r['skipped']}/{r['failed']}"
        lines.append(
            f"{r['scorer']:<11} {str(r['explainer'])[:18]:<18} "
            f"{str(r['explanation_set'])[:6]:<7} {str(r['judge'])[:22]:<22} "
            f"{str(r['config_hash'])[:6]:<7} "
            f"{r['metric']:<18} {ci:<22} {r['n']:>5} "
            f"{r['chance']:>7.3f}  {counts:<22} "
            f"{r['examples_lost']}"
            + (
                f"  {r['control']}: {r['control_mean']:.3f} "
                f"[{r['control_ci_lo']:.3f}, {r['control_ci_hi']:.3f}] ({r['control_n']})"
                if r.get("control")
                else ""
            )
        )
    served = df.filter(pl.col("judge_endpoint").is_not_null())
    for judge, endpoint in served.select("judge", "judge_endpoint").unique().sort("judge").rows():
        lines.append(f"judge {judge} served at {endpoint}")
    return lines
