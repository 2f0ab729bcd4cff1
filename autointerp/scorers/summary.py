"""Run summary: per scorer (and explainer), the mean of each headline metric over latents
with a bootstrap CI, the mean chance level beside it, how many latents were scored,
skipped and failed, and the same mean for each random-baseline control run
(``RUN_DIR/controls/<control>/``, autointerp.controls) when there is one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from autointerp.scorers.metrics import mean_ci
from autointerp.scorers.registry import HEADLINE

COLUMNS = [
    "scorer",
    "explainer",
    "config_hash",
    "metric",
    "mean",
    "ci_lo",
    "ci_hi",
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
    "control_scored",
]
CONTROL_STATS = ["control_mean", "control_ci_lo", "control_ci_hi", "control_scored"]


def summarize(run_dir: str | Path, scorers: list[str] | None = None, seed: int = 0) -> pl.DataFrame:
    """One row per (scorer, explainer, scorer config_hash, headline metric) and control run
    (``control`` null when there is none); columns in docs/score.md. A latent counts once per
    group: its ``ok`` row if it has one (a latent re-explained after a failure keeps its old
    failed row in the table)."""
    df = _summarize(run_dir, scorers, seed)
    controls = Path(run_dir) / "controls"
    found = []
    for d in sorted(controls.iterdir()) if controls.is_dir() else []:
        c = _summarize(d, scorers, seed)
        if c.height:
            # the control's first group per (scorer, explainer, metric)
            c = c.unique(["scorer", "explainer", "metric"], keep="first", maintain_order=True)
            found.append(
                c.select(
                    "scorer",
                    "explainer",
                    "metric",
                    pl.lit(d.name).alias("control"),
                    pl.col("mean").alias("control_mean"),
                    pl.col("ci_lo").alias("control_ci_lo"),
                    pl.col("ci_hi").alias("control_ci_hi"),
                    pl.col("scored").cast(pl.Int64).alias("control_scored"),
                )
            )
    if not df.height:
        return df
    if not found:
        return df.with_columns(
            pl.lit(None, pl.String).alias("control"),
            *[pl.lit(None, pl.Float64).alias(c) for c in CONTROL_STATS[:3]],
            pl.lit(None, pl.Int64).alias("control_scored"),
        )
    return df.join(pl.concat(found), on=["scorer", "explainer", "metric"], how="left").select(
        COLUMNS
    )


def _summarize(run_dir: str | Path, scorers: list[str] | None, seed: int) -> pl.DataFrame:
    folder = Path(run_dir) / "scores"
    rows = []
    for name, metrics in HEADLINE.items():
        path = folder / f"{name}.parquet"
        if (scorers and name not in scorers) or not path.is_file():
            continue
        rank = {"ok": 0, "skipped": 1, "failed": 2}
        df = (
            pl.read_parquet(path)
            .sort(pl.col("status").replace_strict(rank, default=3))
            .unique(["explainer", "config_hash", "hookpoint", "latent"], keep="first")
            .sort(["explainer", "config_hash", "hookpoint", "latent"])
        )
        groups = df.group_by(["explainer", "config_hash"], maintain_order=True)
        for (explainer, chash), g in groups:
            ok = g.filter(pl.col("status") == "ok")
            counts = {
                "latents": g.select(["hookpoint", "latent"]).unique().height,
                "scored": ok.height,
                "skipped": g.filter(pl.col("status") == "skipped").height,
                "failed": g.filter(pl.col("status") == "failed").height,
                "examples_lost": int(g["n_lost"].sum()),
            }
            for metric in metrics:
                values = ok[metric].to_numpy() if metric in ok.columns else np.zeros(0)
                mean, lo, hi = mean_ci(values.astype(np.float64), seed=seed)
                chance_col = f"{metric}_chance"
                chance = (
                    float(np.nanmean(ok[chance_col].to_numpy()))
                    if chance_col in ok.columns and ok.height
                    else float("nan")
                )
                rows.append(
                    {
                        "scorer": name,
                        "explainer": explainer,
                        "config_hash": chash,
                        "metric": metric,
                        "mean": mean,
                        "ci_lo": lo,
                        "ci_hi": hi,
                        "chance": chance,
                        **counts,
                    }
                )
    return (
        pl.DataFrame(
            rows, schema_overrides={c: pl.Float64 for c in ("mean", "ci_lo", "ci_hi", "chance")}
        )
        if rows
        else pl.DataFrame(schema={c: pl.String for c in COLUMNS})
    )


def format_summary(df: pl.DataFrame) -> list[str]:
    """Plain-text lines of a summary table (what ``autointerp score`` prints)."""
    if df.is_empty():
        return ["(no scores yet)"]
    lines = [
        f"{'scorer':<11} {'explainer':<18} {'config':<8} {'metric':<18} {'mean [95% CI]':<22} "
        f"{'chance':>7}  {'scored/skipped/failed':<22} lost"
        + ("  control: mean [95% CI]" if df["control"].is_not_null().any() else "")
    ]
    for r in df.iter_rows(named=True):
        ci = f"{r['mean']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
        counts = f"{r['scored']}/{r['skipped']}/{r['failed']}"
        lines.append(
            f"{r['scorer']:<11} {str(r['explainer'])[:18]:<18} {str(r['config_hash'])[:6]:<8} "
            f"{r['metric']:<18} {ci:<22} "
            f"{r['chance']:>7.3f}  {counts:<22} "
            f"{r['examples_lost']}"
            + (
                f"  {r['control']}: {r['control_mean']:.3f} "
                f"[{r['control_ci_lo']:.3f}, {r['control_ci_hi']:.3f}]"
                if r.get("control")
                else ""
            )
        )
    return lines
