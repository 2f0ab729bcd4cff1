"""A latent's example windows as the explainers and scorers see them, read lazily from
``examples/<hookpoint>.parquet`` a latent range at a time (memory does not grow with latents)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from autointerp.text import Vocab

COLUMNS = [
    "latent",
    "split",
    "kind",
    "sampler",
    "quantile",
    "rank",
    "seq_id",
    "start",
    "tokens",
    "activations",
    "activations_norm",
    "max_activation",
    "reason",
]


@dataclass
class LatentExamples:
    """One latent's windows of the requested splits: one dict per window (the examples
    table's columns), as stored (by split, kind, sampler, rank)."""

    hookpoint: str
    latent: int
    records: list[dict[str, Any]]
    vocab: Vocab
    skipped: str | None = None  # why the sample stage gave it no windows
    extra: dict[str, object] = field(default_factory=dict)

    def windows(self, split: str, kind: str | Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Windows of one split; ``kind`` 'activating', 'contrast' (every contrast source) or
        a list of kinds."""
        out = [r for r in self.records if r["split"] == split]
        if kind == "contrast":
            return [r for r in out if r["kind"] != "activating"]
        if isinstance(kind, str):
            return [r for r in out if r["kind"] == kind]
        if kind is not None:
            return [r for r in out if r["kind"] in kind]
        return out


LIST_COLUMNS = ("tokens", "activations", "activations_norm")


def _records(df: pl.DataFrame, vocab: Vocab) -> list[dict[str, Any]]:
    """Rows as dicts: scalar columns as Python values, the list columns as numpy rows of one
    2-D array each (cheaper than Python lists), plus ``strings``: the token strings, and
    ``n_special``: how many of the tokens are special (``Vocab.n_special``)."""
    scalars = df.drop(LIST_COLUMNS).to_dicts()
    strings = vocab.window_strings(df["tokens"])
    for col in LIST_COLUMNS:
        lens = df[col].list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = np.asarray(df[col].to_arrow().flatten())  # null (skipped) rows add nothing
        ends = np.cumsum(lens)
        for r, end, n in zip(scalars, ends.tolist(), lens.tolist(), strict=True):
            r[col] = flat[end - n : end] if n else None  # views into one array, no copies
        if col == "tokens":  # special tokens (BOS, EOS) per window, counted once for all
            special = vocab.special_counts(flat, lens)
            for r, k in zip(scalars, special.tolist(), strict=True):
                r["n_special"] = k
    for r, toks in zip(scalars, strings, strict=True):
        r["strings"] = toks
    return scalars


def highlight_mask(norm: Sequence[int] | np.ndarray, threshold: float) -> np.ndarray:
    """Tokens marked as firing: ``activations_norm`` at or above ``threshold`` of the max
    (0..10 levels; any firing token when ``threshold`` is 0)."""
    level = max(1, int(np.ceil(10 * threshold - 1e-9)))
    return np.asarray(norm, dtype=np.int16) >= level


def examples_path(run_dir: Path, hookpoint: str) -> Path:
    return Path(run_dir) / "examples" / f"{hookpoint.replace(':', '@')}.parquet"


def examples_hash(run_dir: Path, hookpoint: str) -> str:
    """The sample config hash the examples were built with (from the sidecar), or ''."""
    side = examples_path(run_dir, hookpoint).with_suffix(".json")
    if not side.is_file():
        return ""
    return str(json.loads(side.read_text()).get("config_hash", ""))


def example_hookpoints(run_dir: Path) -> list[str]:
    """Hookpoints (folder names) with a finished examples file."""
    folder = Path(run_dir) / "examples"
    return sorted(p.stem for p in folder.glob("*.parquet")) if folder.is_dir() else []


def require_examples(run_dir: Path, hookpoints: Sequence[str] | None) -> list[str]:
    """The hookpoints to work on; a one-line error when the sample stage has not run."""
    found = example_hookpoints(run_dir)
    if not found:
        raise FileNotFoundError(
            f"no examples in {Path(run_dir) / 'examples'}: run `autointerp sample {run_dir}` first"
        )
    if hookpoints:
        wanted = [h.replace(":", "@") for h in hookpoints]
        missing = [h for h in wanted if h not in found]
        if missing:
            raise ValueError(
                f"no examples for hookpoint(s) {missing} in {run_dir} (have {found}): "
                "sample them first or pick another --hookpoint"
            )
        return wanted
    return found


def all_latents(run_dir: Path, hookpoint: str) -> np.ndarray:
    """Every latent with rows in the examples file (sorted)."""
    lat = pl.scan_parquet(examples_path(run_dir, hookpoint)).select("latent").unique().collect()
    return np.sort(lat["latent"].to_numpy())


def iter_latent_examples(
    run_dir: Path,
    hookpoint: str,
    vocab: Vocab,
    splits: Sequence[str],
    latents: Iterable[int] | None = None,
    chunk: int = 512,
) -> Iterator[LatentExamples]:
    """Yield the latents' windows of ``splits`` (skipped latents too, with ``skipped`` set),
    reading ``chunk`` latents at a time. Windows of other splits are never read."""
    path = examples_path(run_dir, hookpoint)
    wanted = np.unique(np.asarray(list(latents), dtype=np.int64)) if latents is not None else None
    ids = all_latents(run_dir, hookpoint) if wanted is None else wanted
    scan = pl.scan_parquet(path).select(COLUMNS)
    for i in range(0, len(ids), chunk):
        block = ids[i : i + chunk]
        df = scan.filter(
            pl.col("latent").is_in(block.tolist())
            & (pl.col("split").is_in(list(splits)) | (pl.col("kind") == "skipped"))
        ).collect()
        groups: dict[int, list[dict[str, Any]]] = {}
        for r in _records(df, vocab):
            groups.setdefault(r["latent"], []).append(r)
        for latent in block.tolist():
            recs = groups.get(int(latent))
            if recs is None:
                yield LatentExamples(hookpoint, int(latent), [], vocab, "not sampled")
                continue
            skipped = [r for r in recs if r["kind"] == "skipped"]
            reason = skipped[0]["reason"] if skipped else None
            windows = [r for r in recs if r["kind"] != "skipped"]
            yield LatentExamples(hookpoint, int(latent), windows, vocab, reason)
