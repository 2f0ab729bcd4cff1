"""Output-centric views of latents: what a latent's decoder direction does to the next token.

- logit lens: the decoder row through the model's final norm and unembedding; the ``k`` top
  and bottom tokens of every latent at once (one matmul per chunk of latents);
- steering view: the tokens whose next-token probability rises most under calibrated steering
  (computed by the intervention scorer's pre-pass, scorers/calibration.py).

Stored in ``<run_dir>/output_views/<hookpoint>.parquet`` (columns in docs/intervention.md) for
the ``output`` explainer and the report.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:  # torch is imported where it runs: readers (the report) need no torch
    import torch
    from torch import nn

NORM_ATTRS = (
    "model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "model.final_layernorm",
    "model.decoder.final_layer_norm",
    "transformer.norm",
)
VIEW_SCHEMA: dict[str, pl.DataType] = {
    "hookpoint": pl.String(),
    "latent": pl.Int32(),
    "lens_top": pl.List(pl.String()),
    "lens_top_logit": pl.List(pl.Float32()),
    "lens_bottom": pl.List(pl.String()),
    "lens_bottom_logit": pl.List(pl.Float32()),
    "steer_top": pl.List(pl.String()),
    "steer_top_delta": pl.List(pl.Float32()),
}


def views_path(run_dir: Path, hookpoint: str) -> Path:
    return Path(run_dir) / "output_views" / f"{hookpoint.replace(':', '@')}.parquet"


def final_norm(model: nn.Module) -> nn.Module:
    """The model's final norm (before the unembedding), found by the known attribute names."""
    from torch import nn

    for path in NORM_ATTRS:
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.Module):
            return obj
    raise ValueError(
        f"cannot find the final norm of {type(model).__name__} (looked for {', '.join(NORM_ATTRS)})"
        ": output views need a model with one of these attributes"
    )


def unembed(model: nn.Module) -> nn.Module:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is None:
        raise ValueError(
            f"{type(model).__name__} has no output embeddings (get_output_embeddings() is None): "
            "output views need a causal LM head"
        )
    return head


def logit_lens(
    model: nn.Module, rows: torch.Tensor, k: int = 10, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top and bottom ``k`` token ids and logits of every decoder row ``[n, d]``:
    ``(top_ids, top_logits, bottom_ids, bottom_logits)``, each ``[n, k]``."""
    import torch

    with torch.inference_mode():
        return _logit_lens(model, rows, k, chunk)


def _logit_lens(
    model: nn.Module, rows: torch.Tensor, k: int, chunk: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    norm, head = final_norm(model), unembed(model)
    p = next(model.parameters())
    out: list[list[torch.Tensor]] = [[], [], [], []]
    for s in range(0, rows.shape[0], chunk):
        x = rows[s : s + chunk].to(device=p.device, dtype=p.dtype)
        logits = head(norm(x[:, None])[:, 0]).float()
        top = logits.topk(k, dim=-1)
        bot = (-logits).topk(k, dim=-1)
        for acc, v in zip(out, (top.indices, top.values, bot.indices, -bot.values), strict=True):
            acc.append(v.cpu())
    return tuple(torch.cat(a) for a in out)  # type: ignore[return-value]


def lens_rows(
    hookpoint: str,
    latents: list[int],
    model: nn.Module,
    rows: torch.Tensor,
    tokens: Any,
    k: int = 10,
) -> list[dict[str, Any]]:
    """Logit-lens view rows (steering columns empty) for ``latents`` (rows[i] is latent i's)."""
    ti, tv, bi, bv = logit_lens(model, rows, k)
    out = []
    for j, lat in enumerate(latents):
        out.append(
            {
                "hookpoint": hookpoint,
                "latent": int(lat),
                "lens_top": tokens(ti[j].tolist()),
                "lens_top_logit": tv[j].tolist(),
                "lens_bottom": tokens(bi[j].tolist()),
                "lens_bottom_logit": bv[j].tolist(),
                "steer_top": None,
                "steer_top_delta": None,
            }
        )
    return out


def write_views(run_dir: Path, hookpoint: str, rows: list[dict[str, Any]]) -> Path:
    """Merge ``rows`` into the hookpoint's views file (a latent's new row replaces its old)."""
    path = views_path(run_dir, hookpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pl.DataFrame(rows, schema=VIEW_SCHEMA)
    if path.is_file():
        old = pl.read_parquet(path)
        new = pl.concat([old.join(new.select("latent"), on="latent", how="anti"), new])
    tmp = path.with_suffix(".tmp")
    new.sort("latent").write_parquet(tmp)
    tmp.replace(path)
    return path


def read_views(run_dir: Path, hookpoint: str) -> dict[int, dict[str, Any]]:
    path = views_path(run_dir, hookpoint)
    if not path.is_file():
        return {}
    return {int(r["latent"]): r for r in pl.read_parquet(path).iter_rows(named=True)}
