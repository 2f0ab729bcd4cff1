"""``compare_runs``: match the latents of two runs (or two hookpoints) and compare their
explanations. Writes ``<out>/matches.parquet``, ``orphans.parquet`` and ``summary.json``
(columns in docs/compare.md)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from pydantic import Field

from autointerp.cache import ActivationCache
from autointerp.cache.layout import hookpoint_dirname
from autointerp.compare.correlation import activation_correlation, same_tokens
from autointerp.compare.matching import (
    decoder_similarity,
    match,
    pair_cosine,
    random_pairs,
)
from autointerp.compare.report import latent_scores, summarise
from autointerp.compare.similarity import TextSimilarity, load_explanations, pair_similarity
from autointerp.config import StrictModel
from autointerp.embedding import DEFAULT_MODEL

log = logging.getLogger(__name__)


class CompareConfig(StrictModel):
    by: Literal["auto", "decoder", "activation"] = Field(
        "auto", description="auto: decoder cosine when the coders share a space, else activation"
    )
    threshold: float = Field(0.5, description="a latent whose best match is below is an orphan")
    budget_mb: float = Field(512.0, gt=0, description="memory allowed for a dense n x m matrix")
    embedding_model: str = Field(DEFAULT_MODEL, description="hub id, local folder, or tfidf")
    device: str = "auto"
    random_pairs: int = Field(10_000, ge=1, description="random pairs of the baseline")
    seed: int = 0
    explainer: str | None = Field(None, description="only explanations of this explainer")
    block_nonzeros: int = Field(5_000_000, ge=1, description="A nonzeros read at once")


@dataclass
class CompareResult:
    out_dir: Path
    matches: pl.DataFrame
    orphans: pl.DataFrame
    summary: dict[str, Any]


def cached_hookpoints(run_dir: Path) -> list[str]:
    root = Path(run_dir) / "cache"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "meta.json").is_file())


def pick_hookpoint(run_dir: Path, wanted: str | None, fallback: str | None = None) -> str:
    have = cached_hookpoints(run_dir)
    if wanted is not None:
        if hookpoint_dirname(wanted) not in have:
            raise FileNotFoundError(
                f"{run_dir} has no complete cache of {wanted} (cached: {', '.join(have) or 'none'})"
                f": run `autointerp cache --run-dir {run_dir} --hookpoint {wanted}` first"
            )
        return hookpoint_dirname(wanted)
    if fallback is not None and hookpoint_dirname(fallback) in have:
        return hookpoint_dirname(fallback)
    if len(have) == 1:
        return have[0]
    raise ValueError(
        f"{run_dir} has {'no cached hookpoint' if not have else 'several cached hookpoints'} "
        f"({', '.join(have) or 'none'}): pass --hookpoint-a/--hookpoint-b"
    )


def load_decoder(cache: ActivationCache) -> np.ndarray | None:
    """Decoder rows ``[n_latents, d_out]`` of the coder the cache was made with (None when the
    meta names none or it cannot be loaded)."""
    path = cache.meta.get("coder") or ""
    if not path:
        return None
    from autointerp.coders.loader import CoderLoadError, load_coder

    try:
        coder = load_coder(path, hookpoint=cache.meta.get("hookpoint"))
    except CoderLoadError as err:
        log.warning("no decoder for %s: %s", cache.root, err)
        return None
    rows = coder.decoder_rows.detach().float().cpu().numpy()
    if len(rows) != cache.n_latents:
        log.warning(
            "coder %s has %d latents, the cache %d: ignored", path, len(rows), cache.n_latents
        )
        return None
    return rows


def default_out(run_a: Path, hp_a: str, run_b: Path, hp_b: str) -> Path:
    name = f"{Path(run_a).resolve().name}.{hp_a}__{Path(run_b).resolve().name}.{hp_b}"
    return Path(run_a).resolve().parent / "compare" / name


def compare_runs(
    run_a: Path,
    run_b: Path,
    hookpoint_a: str | None = None,
    hookpoint_b: str | None = None,
    out_dir: Path | None = None,
    config: CompareConfig | None = None,
) -> CompareResult:
    cfg = config or CompareConfig()
    run_a, run_b = Path(run_a), Path(run_b)
    hp_a = pick_hookpoint(run_a, hookpoint_a)
    hp_b = pick_hookpoint(run_b, hookpoint_b, fallback=hp_a)
    # fail on a missing embedding model before the heavy work (coders, token digests)
    text_sim = TextSimilarity(cfg.embedding_model, cfg.device)
    cache_a, cache_b = ActivationCache(run_a, hp_a), ActivationCache(run_b, hp_b)
    dec_a, dec_b = load_decoder(cache_a), load_decoder(cache_b)
    shared = dec_a is not None and dec_b is not None and dec_a.shape[1] == dec_b.shape[1]
    why_tokens = same_tokens(cache_a, cache_b)
    by = cfg.by
    if by == "auto":
        by = "decoder" if shared else "activation"
    if by == "decoder" and not shared:
        why = (
            "a coder could not be loaded"
            if dec_a is None or dec_b is None
            else (f"decoder widths differ ({dec_a.shape[1]} vs {dec_b.shape[1]})")
        )
        raise ValueError(f"cannot match by decoder direction: {why}; use --by activation")
    if by == "activation" and why_tokens is not None:
        raise ValueError(
            f"cannot match {run_a}:{hp_a} with {run_b}:{hp_b}: the coders share no space and "
            f"the caches hold different tokens ({why_tokens}); cache both on the same dataset"
        )
    n_a, n_b = cache_a.n_latents, cache_b.n_latents
    rand = random_pairs(n_a, n_b, cfg.random_pairs, cfg.seed)
    log.info("matching %d x %d latents by %s", n_a, n_b, by)
    corr_kw = {"budget_mb": cfg.budget_mb, "block_nonzeros": cfg.block_nonzeros}
    if by == "decoder":
        sim = decoder_similarity(dec_a, dec_b, [rand], budget_mb=cfg.budget_mb)
        m = match(sim, n_a, n_b)
        pairs = np.stack([m.a, m.b], axis=1)
        dec_pairs, dec_rand = m.score, sim.lookups[0]
        act_pairs = act_rand = None
        if why_tokens is None:
            corr = activation_correlation(
                cache_a, cache_b, [pairs, rand], keep_dense=False, **corr_kw
            )
            act_pairs, act_rand = corr.lookups
    else:
        sim = activation_correlation(cache_a, cache_b, [rand], **corr_kw)
        m = match(sim, n_a, n_b)
        pairs = np.stack([m.a, m.b], axis=1)
        act_pairs, act_rand = m.score, sim.lookups[0]
        dec_pairs = dec_rand = None
        if shared:
            dec_pairs, dec_rand = pair_cosine(dec_a, dec_b, pairs), pair_cosine(dec_a, dec_b, rand)
    sim.dense = None
    nan = np.full(len(m.a), np.nan, dtype=np.float32)
    matches = pl.DataFrame(
        {
            "hookpoint_a": pl.Series([hp_a] * len(m.a), dtype=pl.String),
            "latent_a": m.a.astype(np.int32),
            "hookpoint_b": pl.Series([hp_b] * len(m.a), dtype=pl.String),
            "latent_b": m.b.astype(np.int32),
            "score": m.score,
            "decoder_cos": dec_pairs if dec_pairs is not None else nan,
            "act_corr": act_pairs if act_pairs is not None else nan,
            "mutual": m.mutual,
            "above_threshold": m.score >= cfg.threshold,
        }
    )
    ex_a = load_explanations(run_a, hp_a, cfg.explainer)
    ex_b = load_explanations(run_b, hp_b, cfg.explainer)
    matches = matches.join(
        ex_a.select(
            pl.col("latent").cast(pl.Int32).alias("latent_a"),
            pl.col("explanation").alias("explanation_a"),
        ),
        on="latent_a",
        how="left",
        maintain_order="left",
    ).join(
        ex_b.select(
            pl.col("latent").cast(pl.Int32).alias("latent_b"),
            pl.col("explanation").alias("explanation_b"),
        ),
        on="latent_b",
        how="left",
        maintain_order="left",
    )
    va, vb = text_sim.vectors([run_a, run_b], [ex_a, ex_b])
    row_a = {k: i for i, k in enumerate(ex_a["latent"].to_list())}
    row_b = {k: i for i, k in enumerate(ex_b["latent"].to_list())}
    both = [
        (i, row_a[a], row_b[b])
        for i, (a, b) in enumerate(zip(m.a, m.b, strict=True))
        if a in row_a and b in row_b
    ]
    exp_sim = nan.copy()
    if both:
        idx = np.array(both)
        exp_sim[idx[:, 0]] = pair_similarity(va, vb, idx[:, 1], idx[:, 2])
    matches = matches.with_columns(explanation_sim=pl.Series(exp_sim, dtype=pl.Float32))
    exp_rand = np.zeros(0, dtype=np.float32)
    if ex_a.height and ex_b.height:
        rp = random_pairs(ex_a.height, ex_b.height, cfg.random_pairs, cfg.seed + 1)
        exp_rand = pair_similarity(va, vb, rp[:, 0], rp[:, 1])
    orphans = _orphans(sim, cfg.threshold, (run_a, hp_a, ex_a), (run_b, hp_b, ex_b))
    summary = summarise(
        matches,
        {"decoder_cos": dec_rand, "act_corr": act_rand, "explanation_sim": exp_rand},
        orphans,
        meta={
            "run_a": str(run_a),
            "hookpoint_a": hp_a,
            "n_latents_a": n_a,
            "run_b": str(run_b),
            "hookpoint_b": hp_b,
            "n_latents_b": n_b,
            "by": by,
            "method": m.method,
            "threshold": cfg.threshold,
            "same_tokens": why_tokens is None,
            "shared_space": shared,
            "embedding": text_sim.backend,
            "random_pairs": cfg.random_pairs,
            "seed": cfg.seed,
        },
    )
    out = Path(out_dir) if out_dir is not None else default_out(run_a, hp_a, run_b, hp_b)
    out.mkdir(parents=True, exist_ok=True)
    matches.write_parquet(out / "matches.parquet")
    orphans.write_parquet(out / "orphans.parquet")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    log.info("wrote %s", out)
    return CompareResult(out, matches, orphans, summary)


def _orphans(sim, threshold: float, side_a, side_b) -> pl.DataFrame:
    frames = []
    for side, (run, hp, ex), best, score in (
        ("a", side_a, sim.best_a, sim.best_a_score),
        ("b", side_b, sim.best_b, sim.best_b_score),
    ):
        lone = np.flatnonzero(~(score >= threshold))  # NaN (no defined match) counts
        df = pl.DataFrame(
            {
                "side": [side] * len(lone),
                "hookpoint": [hp] * len(lone),
                "latent": lone.astype(np.int32),
                "best_match": np.where(best[lone] >= 0, best[lone], -1).astype(np.int32),
                "best_score": score[lone].astype(np.float32),
            },
            schema={
                "side": pl.String,
                "hookpoint": pl.String,
                "latent": pl.Int32,
                "best_match": pl.Int32,
                "best_score": pl.Float32,
            },
        ).join(
            ex.select(pl.col("latent").cast(pl.Int32), "explanation"),
            on="latent",
            how="left",
            maintain_order="left",
        )
        df = latent_scores(run, hp, df)
        frames.append(df)
    return pl.concat(frames, how="diagonal_relaxed")
