"""One range of latents' details for the report's latent view: strongest activating and
contrast windows (token strings), every explanation row, every score row, decoder neighbours."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autointerp.scorers.registry import HEADLINE
from autointerp.text import Vocab

CONTRAST_KINDS = ("random", "similar", "neighbour")


def _windows(df: pl.DataFrame, vocab: Vocab) -> list[dict[str, Any]]:
    strings = vocab.window_strings(df["tokens"])
    out = []
    for row, toks in zip(df.iter_rows(named=True), strings, strict=True):
        out.append(
            {
                "split": row["split"],
                "kind": row["kind"],
                "quantile": row["quantile"],
                "max_activation": float(row["max_activation"] or 0.0),
                "strings": toks,
                "activations": list(row["activations"]),
                "norm": list(row["activations_norm"]),
                "source_latent": row["source_latent"],
            }
        )
    return out


def latent_details(
    run_dir: Path,
    hookpoint: str,
    latents: list[int],
    vocab: Vocab,
    expl: pl.DataFrame,
    scores: dict[str, pl.DataFrame],
    n_activating: int = 10,
    n_contrast: int = 2,
    views: dict[int, dict[str, Any]] | None = None,
) -> Iterator[dict[str, Any]]:
    """Per latent of ``latents`` (one range read of the examples file): its strongest
    ``n_activating`` windows, up to ``n_contrast`` windows of each contrast kind, its
    explanations (every candidate), score rows and decoder neighbours. ``expl`` and
    ``scores`` hold this hookpoint's rows sorted by latent (:func:`by_hookpoint`), so each
    chunk takes its rows by binary search instead of filtering whole tables."""
    path = run_dir / "examples" / f"{hookpoint}.parquet"
    lo, hi = min(latents), max(latents) + 1
    cols = [
        "latent", "split", "kind", "quantile", "rank", "tokens", "activations",
        "activations_norm", "max_activation", "source_latent", "source_similarity", "reason",
    ]  # fmt: skip
    ex = (
        pl.scan_parquet(path).select(cols).filter(pl.col("latent").is_between(lo, hi - 1)).collect()
        if path.is_file()
        else pl.DataFrame(schema={c: pl.Null for c in cols})
    )
    act = (
        ex.filter(pl.col("kind") == "activating")
        .sort(["latent", "max_activation"], descending=[False, True])
        .group_by("latent", maintain_order=True)
        .head(n_activating)
    )
    con = (
        ex.filter(pl.col("kind").is_in(CONTRAST_KINDS))
        .sort(["latent", "kind", "split", "rank"])
        .group_by(["latent", "kind"], maintain_order=True)
        .head(n_contrast)
    )
    neigh = (
        ex.filter(pl.col("kind") == "neighbour")
        .group_by(["latent", "source_latent"])
        .agg(similarity=pl.col("source_similarity").max())
        .sort(["latent", "similarity"], descending=[False, True])
    )
    skipped = dict(ex.filter(pl.col("kind") == "skipped").select("latent", "reason").iter_rows())
    expl_cols = ["explanation_id", "explainer", "candidate", "selected", "status",
                 "explanation", "selection_score", "error"]  # fmt: skip
    expl_by = _by_latent(
        latent_range(expl, lo, hi).sort(["latent", "explainer", "candidate"]),
        [c for c in expl_cols if c in expl.columns],
    )
    act_by, con_by = _by_latent(act, cols), _by_latent(con, cols)
    neigh_by = _by_latent(neigh, ["source_latent", "similarity"])
    score_by = {
        name: _by_latent(latent_range(df, lo, hi), df.columns) for name, df in scores.items()
    }
    for latent in sorted(set(latents)):
        rows_sc = []
        for name, by in score_by.items():
            for r in by.get(latent, pl.DataFrame()).iter_rows(named=True):
                rows_sc.append(
                    {
                        "scorer": name,
                        "explanation_id": r["explanation_id"],
                        "explainer": r["explainer"],
                        "status": r["status"],
                        "error": r["error"],
                        "n_examples": r["n_examples"],
                        "n_lost": r["n_lost"],
                        "metrics": {
                            m: [_num(r.get(f"{m}{s}")) for s in ("", "_lo", "_hi", "_chance")]
                            for m in HEADLINE[name]
                        },
                    }
                )
        neighbours = neigh_by.get(latent)
        yield {
            "hookpoint": hookpoint,
            "latent": latent,
            "skipped": skipped.get(latent),
            "activating": _windows(act_by[latent], vocab) if latent in act_by else [],
            "contrast": _windows(con_by[latent], vocab) if latent in con_by else [],
            "explanations": expl_by[latent].to_dicts() if latent in expl_by else [],
            "scores": rows_sc,
            "output": _output_view((views or {}).get(latent)),
            "neighbours": []
            if neighbours is None
            else [
                {"latent": int(a), "similarity": float(b)}
                for a, b in neighbours.select("source_latent", "similarity").iter_rows()
            ],
        }


def _output_view(row: dict[str, Any] | None) -> dict[str, list[str]] | None:
    """The latent's output-centric views (output_views/<hookpoint>.parquet), when computed."""
    if row is None:
        return None
    keys = ("lens_top", "lens_bottom", "steer_top")
    return {k: list(row.get(k) or []) for k in keys}


def by_hookpoint(df: pl.DataFrame, hookpoint: str) -> pl.DataFrame:
    """``df``'s rows of one hookpoint, sorted by latent (stable): what latent_range slices."""
    if df.is_empty() or "hookpoint" not in df.columns:
        return df
    return df.filter(pl.col("hookpoint") == hookpoint).sort("latent", maintain_order=True)


def latent_range(df: pl.DataFrame, lo: int, hi: int) -> pl.DataFrame:
    """The rows with ``lo <= latent < hi`` of a frame sorted by latent."""
    if df.is_empty():
        return df
    a, b = np.searchsorted(df["latent"].to_numpy(), [lo, hi], side="left")
    return df.slice(int(a), int(b - a))


def _by_latent(df: pl.DataFrame, columns: list[str]) -> dict[int, pl.DataFrame]:
    """Rows of ``df`` split by latent (one pass, order kept)."""
    if df.is_empty():
        return {}
    parts = df.partition_by("latent", as_dict=True, maintain_order=True)
    return {int(k[0]): v.select(columns) for k, v in parts.items()}


def _num(value: Any) -> float | None:
    """A float for JSON: None for null or NaN."""
    if value is None:
        return None
    v = float(value)
    return None if np.isnan(v) else v
