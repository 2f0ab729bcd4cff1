"""One range of latents' details for the report's latent view: strongest activating and
contrast windows (token strings), every explanation row, every score row, decoder neighbours."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq

from autointerp.scorers.registry import HEADLINE
from autointerp.text import Vocab

CONTRAST_KINDS = ("random", "similar", "neighbour")
EXAMPLE_COLUMNS = [
    "latent", "split", "kind", "quantile", "rank", "tokens", "activations",
    "activations_norm", "max_activation", "source_latent", "source_similarity", "reason",
]  # fmt: skip


class ExampleRows:
    """A hookpoint's examples file, read by latent range one row group at a time: the row
    groups that overlap the range (from their latent statistics) are read once and kept
    until a later range starts past them. Rows come in file order, as a filtered scan's."""

    def __init__(self, path: Path) -> None:
        self.pf = pq.ParquetFile(path) if path.is_file() else None
        self.bounds: list[tuple[float, float]] = []
        self._kept: dict[int, pl.DataFrame] = {}
        if self.pf is not None:
            col = self.pf.schema_arrow.get_field_index("latent")
            for i in range(self.pf.metadata.num_row_groups):
                st = self.pf.metadata.row_group(i).column(col).statistics
                ok = st is not None and st.has_min_max
                self.bounds.append((st.min, st.max) if ok else (-math.inf, math.inf))

    def latent_range(self, lo: int, hi: int) -> pl.DataFrame:
        """Rows with ``lo <= latent < hi``."""
        if self.pf is None:
            return pl.DataFrame(schema={c: pl.Null for c in EXAMPLE_COLUMNS})
        for i in [i for i in self._kept if self.bounds[i][1] < lo]:
            del self._kept[i]
        frames = []
        for i, (a, b) in enumerate(self.bounds):
            if a < hi and b >= lo:
                if i not in self._kept:
                    table = self.pf.read_row_group(i, columns=EXAMPLE_COLUMNS)
                    self._kept[i] = pl.from_arrow(table)  # type: ignore[assignment]
                frames.append(self._kept[i].filter(pl.col("latent").is_between(lo, hi - 1)))
        if not frames:
            table = self.pf.schema_arrow.empty_table().select(EXAMPLE_COLUMNS)
            return pl.from_arrow(table)  # type: ignore[return-value]
        return pl.concat(frames)


def _windows(df: pl.DataFrame, vocab: Vocab) -> dict[int, list[dict[str, Any]]]:
    """The windows of every latent of ``df`` (its rows in order), token strings made at once."""
    strings = vocab.window_strings(df["tokens"]) if df.height else []
    cols = ["latent", "split", "kind", "quantile", "max_activation", "activations",
            "activations_norm", "source_latent"]  # fmt: skip
    out: dict[int, list[dict[str, Any]]] = {}
    for row, toks in zip(df.select(cols).iter_rows(named=True), strings, strict=True):
        out.setdefault(int(row["latent"]), []).append(
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
    examples: ExampleRows | None = None,
) -> Iterator[dict[str, Any]]:
    """Per latent of ``latents`` (one range read of the examples file): its strongest
    ``n_activating`` windows, up to ``n_contrast`` windows of each contrast kind, its
    explanations (every candidate), score rows and decoder neighbours. ``expl`` and
    ``scores`` hold this hookpoint's rows sorted by latent (:func:`by_hookpoint`), so each
    chunk takes its rows by binary search instead of filtering whole tables. ``examples``
    (one per hookpoint, asked for ranges in latent order) reads each row group of the
    examples file once instead of once per range."""
    lo, hi = min(latents), max(latents) + 1
    if examples is None:
        examples = ExampleRows(run_dir / "examples" / f"{hookpoint}.parquet")
    ex = examples.latent_range(lo, hi)
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
    expl_by = _rows_by_latent(
        latent_range(expl, lo, hi).sort(["latent", "explainer", "candidate"]),
        [c for c in expl_cols if c in expl.columns],
    )
    act_by, con_by = _windows(act, vocab), _windows(con, vocab)
    neigh_by = _rows_by_latent(neigh, ["source_latent", "similarity"])
    score_by = {
        name: _rows_by_latent(latent_range(df, lo, hi), df.columns) for name, df in scores.items()
    }
    for latent in sorted(set(latents)):
        rows_sc = []
        for name, by in score_by.items():
            for r in by.get(latent, []):
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
        yield {
            "hookpoint": hookpoint,
            "latent": latent,
            "skipped": skipped.get(latent),
            "activating": act_by.get(latent, []),
            "contrast": con_by.get(latent, []),
            "explanations": expl_by.get(latent, []),
            "scores": rows_sc,
            "output": _output_view((views or {}).get(latent)),
            "neighbours": [
                {"latent": int(r["source_latent"]), "similarity": float(r["similarity"])}
                for r in neigh_by.get(latent, [])
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


def _rows_by_latent(df: pl.DataFrame, columns: list[str]) -> dict[int, list[dict[str, Any]]]:
    """Rows of ``df`` (as dicts of ``columns``) grouped by latent: one pass, order kept."""
    out: dict[int, list[dict[str, Any]]] = {}
    if df.is_empty():
        return out
    latents = df["latent"].to_list()
    for latent, row in zip(latents, df.select(columns).iter_rows(named=True), strict=True):
        out.setdefault(int(latent), []).append(row)
    return out


def _num(value: Any) -> float | None:
    """A float for JSON: None for null or NaN."""
    if value is None:
        return None
    v = float(value)
    return None if np.isnan(v) else v
