"""PartTable's writing paths: rows sharing their key given once (``common``), and numeric list
columns built from flat arrays, give the same file as polars' general row conversion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from autointerp.runner.table import PartTable
from autointerp.text import Vocab

SCHEMA = {
    "hookpoint": pl.String(),
    "latent": pl.Int32(),
    "truth": pl.List(pl.Float32()),
    "marks": pl.List(pl.Int16()),
    "note": pl.String(),
}


def test_shared_key_and_list_columns_match_the_general_conversion(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    blocks = []
    for latent in range(3):
        rows = [
            {
                "truth": rng.random(5).astype(np.float32) if i % 3 else [0.5, 1.0, 2.25],
                "marks": None if i == 1 else np.flatnonzero(rng.random(6) > 0.5).tolist(),
                "note": f"w{i}",
                "extra": float(i),  # a column outside the schema: Float64
            }
            for i in range(4)
        ]
        blocks.append(({"hookpoint": "h", "latent": latent}, rows))
    table = PartTable(tmp_path / "t.parquet", ["hookpoint", "latent"], SCHEMA, sort=False)
    for common, rows in blocks:
        table.add(rows, common=common)
    got = pl.read_parquet(table.close())
    # the reference: whole rows, every value as a Python object, through polars' own path
    flat = [
        {
            **common,
            **{k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in r.items()},
        }
        for common, rows in blocks
        for r in rows
    ]
    cols = {**SCHEMA, "extra": pl.Float64()}
    want = pl.DataFrame({c: [r.get(c) for r in flat] for c in cols}, schema=cols, strict=False)
    assert_frame_equal(got, want)
    assert got["marks"].null_count() == 3 and got.height == 12


def test_special_counts_of_many_windows_equal_one_by_one() -> None:
    vocab = Vocab(["<s>", "a", "b", "</s>"], special=[0, 3])
    windows = [[0, 1, 2], [], [3, 3, 1, 0], [1, 7, -1]]  # out-of-range ids count as none
    lengths = np.array([len(w) for w in windows])
    flat = np.array([t for w in windows for t in w], dtype=np.int64)
    got = vocab.special_counts(flat, lengths)
    assert got.tolist() == [vocab.n_special(w) for w in windows] == [1, 0, 3, 0]
