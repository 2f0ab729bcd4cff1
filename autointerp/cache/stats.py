"""Per-latent statistics of one latent shard, computed with a polars group-by."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)
STATS_SCHEMA: dict[str, pl.DataType] = {
    "latent": pl.Int32(),
    "n_active": pl.Int64(),
    "frequency": pl.Float64(),
    "n_windows": pl.Int64(),
    "max": pl.Float32(),
    "mean": pl.Float32(),
    **{f"q{round(q * 100):02d}": pl.Float32() for q in QUANTILES},
}


def shard_stats(table: pa.Table, start: int, end: int, n_tokens_counted: int) -> pl.DataFrame:
    """One row per latent in ``[start, end)``; dead latents get zeros and null values.

    Quantiles use linear interpolation over the latent's nonzero activations.
    """
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    value = pl.col("value")
    agg = df.group_by("latent").agg(
        pl.len().cast(pl.Int64).alias("n_active"),
        pl.col("seq_id").n_unique().cast(pl.Int64).alias("n_windows"),
        value.max().alias("max"),
        value.mean().cast(pl.Float32).alias("mean"),
        *[
            value.quantile(q, interpolation="linear")
            .cast(pl.Float32)
            .alias(f"q{round(q * 100):02d}")
            for q in QUANTILES
        ],
    )
    full = pl.DataFrame({"latent": pl.int_range(start, end, dtype=pl.Int32, eager=True)})
    out = (
        full.join(agg, on="latent", how="left")
        .with_columns(
            pl.col("n_active").fill_null(0),
            pl.col("n_windows").fill_null(0),
        )
        .with_columns(
            (pl.col("n_active").cast(pl.Float64) / max(n_tokens_counted, 1)).alias("frequency")
        )
        .sort("latent")
    )
    return out.select([pl.col(name).cast(dtype) for name, dtype in STATS_SCHEMA.items()])
