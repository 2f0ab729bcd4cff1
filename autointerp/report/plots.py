"""Report plots as PNG files (matplotlib, Agg backend): readable without the HTML."""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from autointerp.scorers.registry import HEADLINE  # noqa: E402

log = logging.getLogger(__name__)
DPI = 110


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def score_histograms(scorer: str, scores: pl.DataFrame, summary: pl.DataFrame, path: Path) -> Path:
    """One panel per headline metric: histogram of the ``ok`` rows' values, the mean with its
    95 % CI (shaded) and the mean chance level (dashed) from the run summary."""
    metrics = HEADLINE[scorer]
    ok = scores.filter(pl.col("status") == "ok")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    config = scores["config_hash"][0] if scores.height else None
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = ok[metric].to_numpy().astype(np.float64) if metric in ok.columns else np.zeros(0)
        values = values[np.isfinite(values)]
        lo, hi = (-1.0, 1.0) if metric == "pearson" else (0.0, 1.0)
        ax.hist(values, bins=np.linspace(lo, hi, 21), color="#4c72b0", alpha=0.85)
        row = summary.filter(
            (pl.col("scorer") == scorer)
            & (pl.col("metric") == metric)
            & (pl.col("config_hash") == config)
        )
        if row.height:
            r = row.row(0, named=True)
            if np.isfinite(r["ci_lo"]) and np.isfinite(r["ci_hi"]):
                ax.axvspan(r["ci_lo"], r["ci_hi"], color="#dd8452", alpha=0.3, label="95% CI")
            if np.isfinite(r["mean"]):
                ax.axvline(r["mean"], color="#dd8452", lw=2, label=f"mean {r['mean']:.3f}")
            if np.isfinite(r["chance"]):
                ax.axvline(
                    r["chance"], color="k", ls="--", lw=1.2, label=f"chance {r['chance']:.3f}"
                )
        ax.set_xlim(lo, hi)
        ax.set_xlabel(metric)
        ax.set_ylabel("explanations")
        ax.set_title(f"{scorer}: {metric} (n={len(values)})", fontsize=10)
        ax.legend(fontsize=7, loc="upper left")
    return _save(fig, path)


def score_vs_frequency(index: pl.DataFrame, scorers: list[str], path: Path) -> Path:
    """One panel per scorer: its main metric against log10 of the latent's firing frequency."""
    k = max(len(scorers), 1)
    fig, axes = plt.subplots(1, k, figsize=(4.2 * k, 3.2), squeeze=False)
    for ax, name in zip(axes[0], scorers, strict=False):
        df = index.select("frequency", name).drop_nulls()
        df = df.filter((pl.col("frequency") > 0) & pl.col(name).is_not_nan())
        x = np.log10(df["frequency"].to_numpy())
        y = df[name].to_numpy()
        ax.scatter(x, y, s=8, alpha=0.6, color="#4c72b0", edgecolors="none")
        ax.set_xlabel("log10 latent frequency")
        ax.set_ylabel(HEADLINE[name][0])
        ax.set_title(f"{name} vs frequency (n={len(y)})", fontsize=10)
    if not scorers:
        axes[0][0].text(0.5, 0.5, "no scores", ha="center", va="center")
    return _save(fig, path)


def agreement_matrix(rho: np.ndarray, n: np.ndarray, scorers: list[str], path: Path) -> Path:
    """Heat map of Spearman correlations between scorers' main metrics (n in each cell)."""
    k = max(len(scorers), 1)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.4, 1.0 * k + 1.8))
    shown = rho if rho.size else np.full((1, 1), np.nan)
    im = ax.imshow(np.nan_to_num(shown, nan=0.0), vmin=-1, vmax=1, cmap="RdBu_r")
    labels = [f"{s}\n{HEADLINE[s][0]}" for s in scorers]
    ax.set_xticks(range(len(scorers)), labels, fontsize=7, rotation=30, ha="right")
    ax.set_yticks(range(len(scorers)), labels, fontsize=7)
    for i in range(len(scorers)):
        for j in range(len(scorers)):
            text = "n/a" if np.isnan(rho[i, j]) else f"{rho[i, j]:.2f}"
            ax.text(j, i, f"{text}\nn={n[i, j]}", ha="center", va="center", fontsize=7)
    ax.set_title("Spearman agreement between scorers", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)
