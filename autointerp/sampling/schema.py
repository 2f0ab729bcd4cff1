"""The examples table: its columns (documented in docs/examples.md) and how selected windows
become rows (exact tokens and activations gathered from the cache)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from autointerp.sampling.config import SPLITS
from autointerp.sampling.windows import Geometry, window_activations, window_tokens

KINDS = ("activating", "random", "similar", "neighbour", "skipped")
SAMPLERS = ("topk", "quantile", "uniform", "random", "similar", "neighbour")

SCHEMA: dict[str, pl.DataType] = {
    "latent": pl.Int32(),
    "split": pl.String(),
    "kind": pl.String(),
    "sampler": pl.String(),
    "quantile": pl.Int8(),
    "rank": pl.Int32(),
    "seq_id": pl.Int32(),
    "start": pl.Int16(),
    "tokens": pl.List(pl.Int32()),
    "activations": pl.List(pl.Float32()),
    "activations_norm": pl.List(pl.Int8()),
    "peak_pos": pl.Int16(),
    "max_activation": pl.Float32(),
    "source_latent": pl.Int32(),
    "source_similarity": pl.Float32(),
    "reason": pl.String(),
}


def normalise(acts: np.ndarray, latent_max: np.ndarray) -> np.ndarray:
    """0..10 per latent: ``round(10 * a / max)``, and at least 1 wherever ``a > 0``."""
    scale = np.where(latent_max > 0, 10.0 / np.maximum(latent_max, 1e-30), 0.0)[:, None]
    norm = np.clip(np.rint(acts * scale), 0, 10).astype(np.int8)
    norm[(acts > 0) & (norm == 0)] = 1
    return norm


def _list_series(name: str, arr: np.ndarray, inner: pl.DataType) -> pl.Series:
    """``[n, w]`` array -> list column, built from flat values and offsets (no Python lists)."""
    if len(arr) == 0:
        return pl.Series(name, [], dtype=pl.List(inner))
    n, w = arr.shape
    offsets = pa.array(np.arange(0, (n + 1) * w, w, dtype=np.int64))
    lists = pa.LargeListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(arr).reshape(-1)))
    return pl.Series(name, lists).cast(pl.List(inner))


def assemble(
    rows: pl.DataFrame,
    geo: Geometry,
    tokens: np.ndarray,
    nz_keys: np.ndarray,
    nz_value: np.ndarray,
    latent_max: np.ndarray,
) -> pl.DataFrame:
    """Selected windows (latent, split, kind, sampler, quantile, seq_id, start, order, source_*)
    -> full rows, sorted by (latent, split, kind, sampler, rank)."""
    rows = rows.sort(
        [
            "latent",
            pl.col("split").replace_strict(dict(zip(SPLITS, range(3), strict=True))),
            pl.col("kind").replace_strict(dict(zip(KINDS, range(5), strict=True))),
            pl.col("sampler").replace_strict(dict(zip(SAMPLERS, range(6), strict=True))),
            "order",
            "seq_id",
            "start",
        ]
    ).with_columns(rank=pl.int_range(pl.len()).over(["latent", "split", "kind", "sampler"]))
    lat = rows["latent"].to_numpy()
    seq = rows["seq_id"].to_numpy()
    start = rows["start"].to_numpy()
    acts = window_activations(nz_keys, nz_value, geo, lat, seq, start)
    toks = window_tokens(tokens, seq, start, geo.window_len)
    norm = normalise(acts, latent_max[lat] if len(lat) else np.zeros(0, np.float32))
    activating = (rows["kind"] == "activating").to_numpy()
    peak = np.where(activating, acts.argmax(axis=1) if len(acts) else 0, -1)
    return rows.select(
        pl.col("latent").cast(pl.Int32),
        "split",
        "kind",
        "sampler",
        pl.col("quantile").cast(pl.Int8),
        pl.col("rank").cast(pl.Int32),
        pl.col("seq_id").cast(pl.Int32),
        pl.col("start").cast(pl.Int16),
        _list_series("tokens", toks, pl.Int32()),
        _list_series("activations", acts, pl.Float32()),
        _list_series("activations_norm", norm, pl.Int8()),
        pl.Series("peak_pos", peak, dtype=pl.Int16).replace(-1, None),
        pl.Series("max_activation", acts.max(axis=1) if len(acts) else [], dtype=pl.Float32),
        pl.col("source_latent").cast(pl.Int32),
        pl.col("source_similarity").cast(pl.Float32),
        pl.lit(None, dtype=pl.String).alias("reason"),
    )


def skipped_rows(latents: np.ndarray, reasons: list[str]) -> pl.DataFrame:
    """One ``kind='skipped'`` row per latent saying why it got no examples."""
    df = pl.DataFrame(
        {"latent": latents.astype(np.int32), "reason": reasons},
        schema={"latent": pl.Int32, "reason": pl.String},
    ).with_columns(kind=pl.lit("skipped"))
    return df.select(
        [
            pl.col(c) if c in df.columns else pl.lit(None, dtype=t).alias(c)
            for c, t in SCHEMA.items()
        ]
    )
