"""A plain-text preview of a few latents' top examples (what `autointerp demo` shows)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from transformers import PreTrainedTokenizerBase


def render_window(
    tokenizer: PreTrainedTokenizerBase, tokens: list[int], acts_norm: list[int]
) -> str:
    """Decode a window, marking tokens where the latent fires as <<token:level>>."""
    parts = []
    for tok, level in zip(tokens, acts_norm, strict=True):
        text = tokenizer.decode([tok]).replace("\n", "\\n")
        parts.append(f"<<{text}:{level}>>" if level > 0 else text)
    return "".join(parts)


def preview_latents(
    examples_path: Path,
    tokenizer: PreTrainedTokenizerBase,
    n_latents: int = 5,
    n_windows: int = 3,
) -> list[str]:
    """Lines showing the top train windows of the ``n_latents`` most frequently firing latents."""
    top = (
        pl.scan_parquet(examples_path)
        .filter((pl.col("split") == "train") & (pl.col("sampler") == "topk"))
        .sort(["latent", "rank"])
        .collect()
    )
    if top.is_empty():
        return ["(no activating examples)"]
    by_count = top.group_by("latent").len().sort(["len", "latent"], descending=[True, False])
    chosen = by_count.head(n_latents)["latent"].to_list()
    lines = []
    for latent in chosen:
        rows = top.filter(pl.col("latent") == latent).head(n_windows)
        lines.append(f"latent {latent}:")
        for row in rows.iter_rows(named=True):
            window = render_window(tokenizer, row["tokens"], row["activations_norm"])
            lines.append(f"  [{row['max_activation']:.1f}] {window}")
    return lines


def preview_explanations(path: Path, n: int = 8) -> list[str]:
    """Lines showing the explanations of the ``n`` best-scored latents by detection (or the
    first ``n`` when there are no scores yet)."""
    expl = pl.read_parquet(path).filter(pl.col("selected") & (pl.col("status") == "ok"))
    scores = path.parent / "scores" / "detection.parquet"
    if scores.is_file():
        det = pl.read_parquet(scores).filter(pl.col("status") == "ok")
        det = det.select("hookpoint", "latent", "explanation_id", "balanced_accuracy")
        expl = expl.join(det, on=["hookpoint", "latent", "explanation_id"], how="left").sort(
            "balanced_accuracy", descending=True, nulls_last=True
        )
    lines = []
    for r in expl.head(n).iter_rows(named=True):
        acc = r.get("balanced_accuracy")
        tag = f"[detection {acc:.2f}] " if acc is not None else ""
        lines.append(f"  latent {r['latent']}: {tag}{r['explanation']}")
    return lines
