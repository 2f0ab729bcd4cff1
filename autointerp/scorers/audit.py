"""The shortcut audit: could a judge score well WITHOUT the explanation?

For every judge scorer that records what it showed (detection, fuzzing, intruder: the
``shown_*`` and ``highlighted*`` columns of ``scores/<scorer>.examples.parquet``), explanation-free
"cue judges" answer from the items alone: one per cue (window length, special tokens shown,
number / runs / positions of highlights, whether offset ``o`` is highlighted, how frequent
the highlighted tokens are in the cache), and a logistic regression over all cues (the
explanation-free ceiling). Each is cross-fitted by latent: chosen on the OTHER latents'
items, so a cue judge is never tuned on the latent it is scored on (scorers/audit_cues.py).

A binary judge scorer's cue judge answers yes/no per window; intruder's picks the window with
the highest (or lowest) cue per prompt. Both are scored by balanced accuracy over the windows
of each latent, chance 0.5 (an intruder pick at chance 1/n is balanced accuracy 0.5).
Written once at the end of the score stage (by the report, beside its detail files, when the
pipeline runs one next) to ``scores/<scorer>.audit.parquet`` (columns in docs/score.md); a
scorer whose ceiling beats chance by more than ``LEAK_MARGIN`` is flagged as leaking in the
summary and the report (scorers/audit_summary.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.scorers.audit_cues import CHANCE, audit_items, cue_matrix
from autointerp.scorers.frequency import token_log_counts

log = logging.getLogger(__name__)
AUDITED = ("detection", "fuzzing", "intruder")
MAX_LATENTS = 5000  # latents audited per scorer config (a seeded sample beyond)
AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "scorer": pl.String(),
    "config_hash": pl.String(),
    "hookpoint": pl.String(),
    "latent": pl.Int32(),
    "cue": pl.String(),
    "rule": pl.String(),
    "balanced_accuracy": pl.Float64(),
    "chance": pl.Float64(),
    "n_examples": pl.Int64(),
    "n_positive": pl.Int64(),
}
NEEDED = ["shown_tokens", "shown_special", "highlighted", "highlighted_ids"]


def audit_path(run_dir: Path, scorer: str) -> Path:
    return Path(run_dir) / "scores" / f"{scorer}.audit.parquet"


# -- files -------------------------------------------------------------------------------


def _items(path: Path, seed: int = 0, max_latents: int = MAX_LATENTS) -> pl.DataFrame | None:
    """The items of every (config, hookpoint, latent), once (the first explanation's: items
    never depend on the explanation), or None when the file lacks the shown columns. Past
    ``max_latents`` latents per config, a seeded sample of that many (memory stays bounded on
    runs of 10^6 latents; a leak of the construction shows on any few thousand)."""
    schema = pl.read_parquet_schema(path)
    if any(c not in schema for c in NEEDED):
        return None
    key = ["config_hash", "hookpoint", "latent"]
    order = [*key, "prompt", *(["position"] if "position" in schema else [])]
    cols = [*order, "explanation_id", "truth", *NEEDED]
    scan = pl.scan_parquet(path).select(cols)
    first = (
        scan.group_by(key)
        .agg(pl.col("explanation_id").min().alias("_first"))
        .with_columns(_rank=pl.struct(key).hash(seed).rank("ordinal").over("config_hash"))
        .filter(pl.col("_rank") <= max_latents)
        .drop("_rank")
    )
    return (
        scan.join(first, on=key)
        .filter(pl.col("explanation_id") == pl.col("_first"))
        .drop("_first")
        .collect()
        # one order whatever the order of the rows in the file (part files are appended in
        # the order the workers wrote them): the fits, and so the audit, are reproducible
        .sort(order, maintain_order=True)
        .select(c for c in cols if c != "position")
    )


def audit_scorer(run_dir: Path, scorer: str, seed: int = 0) -> pl.DataFrame | None:
    """The audit rows of one scorer's examples file (None when it has none to audit)."""
    path = Path(run_dir) / "scores" / f"{scorer}.examples.parquet"
    if not path.is_file():
        return None
    items = _items(path, seed)
    if items is None or items.height == 0:
        return None
    frames = []
    counts = {hp: token_log_counts(run_dir, hp) for hp in items["hookpoint"].unique().to_list()}
    for (chash,), sub in items.group_by(["config_hash"], maintain_order=True):
        names, x = cue_matrix(sub, counts)
        keys = sub.select("hookpoint", "latent")
        gkeys = keys.unique(maintain_order=True)
        group = (
            keys.join(gkeys.with_row_index("_g"), on=["hookpoint", "latent"], how="left")["_g"]
            .to_numpy()
            .astype(np.int64)
        )
        y = sub["truth"].to_numpy().astype(bool)
        prompt = None
        if scorer == "intruder":
            prompt = (
                sub.select(pl.struct("hookpoint", "latent", "prompt").rank("dense"))
                .to_series()
                .to_numpy()
                .astype(np.int64)
                - 1
            )
        ba, rules = audit_items(names, x, y, group, prompt, seed=seed)
        n_ex = np.bincount(group, minlength=gkeys.height)
        n_pos = np.bincount(group, weights=y.astype(np.float64), minlength=gkeys.height)
        for cue, values in ba.items():
            frames.append(
                gkeys.with_columns(
                    pl.lit(scorer).alias("scorer"),
                    pl.lit(chash).alias("config_hash"),
                    pl.lit(cue).alias("cue"),
                    pl.Series("rule", rules[cue].tolist(), dtype=pl.String),
                    pl.Series("balanced_accuracy", values, dtype=pl.Float64),
                    pl.lit(CHANCE).alias("chance"),
                    pl.Series("n_examples", n_ex, dtype=pl.Int64),
                    pl.Series("n_positive", n_pos.astype(np.int64), dtype=pl.Int64),
                )
            )
    if not frames:
        return None
    return (
        pl.concat(frames)
        .select([pl.col(c).cast(t) for c, t in AUDIT_SCHEMA.items()])
        .with_columns(pl.col("balanced_accuracy").fill_nan(None))
    )


def run_audit(
    run_dir: str | Path, scorers: Sequence[str] | None = None, seed: int = 0
) -> dict[str, Path]:
    """Audit every judge scorer with an examples file; returns ``{scorer: audit path}``. An
    audit newer than its examples file is kept as it is (a resumed run that scored nothing
    rewrites nothing)."""
    run_dir = Path(run_dir)
    out = {}
    for name in scorers or AUDITED:
        if name not in AUDITED:
            continue
        path = audit_path(run_dir, name)
        examples = run_dir / "scores" / f"{name}.examples.parquet"
        fresh = path.is_file() and examples.is_file()
        if fresh and path.stat().st_mtime_ns >= examples.stat().st_mtime_ns:
            out[name] = path
            continue
        df = audit_scorer(run_dir, name, seed)
        if df is None:
            continue
        tmp = path.with_suffix(".tmp")
        df.write_parquet(tmp, compression="zstd")
        tmp.replace(path)
        out[name] = path
    return out
