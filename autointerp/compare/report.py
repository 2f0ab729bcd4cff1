"""The summary of a comparison (matched vs random-pair distributions) and its text form."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

log = logging.getLogger(__name__)
METRICS = ("decoder_cos", "act_corr", "explanation_sim")
QUANTILES = (5, 25, 50, 75, 95)


def distribution(values: np.ndarray | None) -> dict[str, float | int] | None:
    """n, mean and quantiles of the finite values (None when there are none)."""
    if values is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return None
    q = np.percentile(v, QUANTILES)
    return {
        "n": int(len(v)),
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        **{f"q{p:02d}": float(x) for p, x in zip(QUANTILES, q, strict=True)},
    }


def summarise(
    matches: pl.DataFrame,
    random: dict[str, np.ndarray | None],
    orphans: pl.DataFrame,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Per metric: the distribution over all matched pairs, over those above the threshold,
    over random pairs, and how many matched pairs beat the random pairs' 95th percentile."""
    out: dict[str, Any] = dict(meta)
    out["n_pairs"] = matches.height
    out["n_above_threshold"] = int(matches["above_threshold"].sum())
    out["n_mutual"] = int(matches["mutual"].sum())
    out["n_orphans_a"] = int((orphans["side"] == "a").sum())
    out["n_orphans_b"] = int((orphans["side"] == "b").sum())
    above = matches.filter(pl.col("above_threshold"))
    metrics: dict[str, Any] = {}
    for name in METRICS:
        matched = matches[name].to_numpy()
        rand = distribution(random.get(name))
        entry = {
            "matched": distribution(matched),
            "matched_above_threshold": distribution(above[name].to_numpy()),
            "random": rand,
        }
        if entry["matched"] is None:
            continue
        if rand is not None:
            finite = matched[np.isfinite(matched)]
            beat = int((finite > rand["q95"]).sum())
            entry["beat_random_q95"] = beat
            entry["beat_random_q95_frac"] = beat / len(finite)
        metrics[name] = entry
    out["metrics"] = metrics
    return out


def latent_scores(run_dir: Path, hookpoint: str, df: pl.DataFrame) -> pl.DataFrame:
    """Add ``score_<scorer>`` (the scorer's headline metric, mean over the latent's ok rows)
    for every ``scores/<scorer>.parquet`` of the run."""
    from autointerp.scorers.registry import HEADLINE

    for scorer, metrics in HEADLINE.items():
        path = Path(run_dir) / "scores" / f"{scorer}.parquet"
        if not path.is_file():
            continue
        try:
            rows = (
                pl.read_parquet(path)
                .filter((pl.col("hookpoint") == hookpoint) & (pl.col("status") == "ok"))
                .group_by("latent")
                .agg(pl.col(metrics[0]).mean().alias(f"score_{scorer}"))
            )
        except pl.exceptions.PolarsError as err:
            log.warning("cannot read %s: %s", path, err)
            continue
        df = df.join(
            rows.select(pl.col("latent").cast(pl.Int32), f"score_{scorer}"), on="latent", how="left"
        )
    return df


def render(summary: dict[str, Any]) -> str:
    """Plain-text summary (what the CLI prints)."""
    s = summary
    lines = [
        f"A: {s['run_a']} {s['hookpoint_a']} ({s['n_latents_a']} latents)",
        f"B: {s['run_b']} {s['hookpoint_b']} ({s['n_latents_b']} latents)",
        f"matched by {s['by']} ({s['method']}): {s['n_pairs']} pairs, "
        f"{s['n_above_threshold']} >= {s['threshold']}, {s['n_mutual']} mutual best",
        f"orphans (best match < {s['threshold']}): {s['n_orphans_a']} in A, "
        f"{s['n_orphans_b']} in B; explanation similarity: {s['embedding']}",
        f"{'metric':<16}{'pairs':>14}{'mean':>8}{'median':>8}{'q95':>8}"
        f"{'rand mean':>10}{'rand q95':>9}{'> rand q95':>12}",
    ]
    for name, e in s["metrics"].items():
        for label, key in (("all", "matched"), (">=thr", "matched_above_threshold")):
            d, r = e[key], e["random"]
            if d is None:
                continue
            rm = f"{r['mean']:>10.3f}{r['q95']:>9.3f}" if r else f"{'-':>10}{'-':>9}"
            beat = (
                f"{e.get('beat_random_q95_frac', float('nan')):>12.1%}" if key == "matched" else ""
            )
            lines.append(
                f"{name:<16}{label + ' ' + str(d['n']):>14}{d['mean']:>8.3f}{d['median']:>8.3f}"
                f"{d['q95']:>8.3f}{rm}{beat}"
            )
    return "\n".join(lines)
