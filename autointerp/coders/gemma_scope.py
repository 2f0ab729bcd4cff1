"""Gemma Scope: ``params.npz`` (W_enc, b_enc, W_dec, b_dec, threshold) or
``params.safetensors`` with the same names in lower case (w_enc, b_enc, w_dec, ...).

JumpReLU: ``pre = x @ W_enc + b_enc``; ``acts = relu(pre) * (pre > threshold)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from autointerp.coders._io import as_float, check_shape, read_safetensors, require
from autointerp.coders.base import AffineSparseCoder, CoderLoadError

FILES = ("params.npz",)
ALT_FILES = ("params.safetensors",)
KEYS = ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"]


class GemmaScopeCoder(AffineSparseCoder):
    format_name = "gemma_scope"


def read_params(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """Weights under their canonical (upper-case W) names, from either file."""
    npz, st = folder / "params.npz", folder / "params.safetensors"
    if npz.is_file():
        try:
            with np.load(npz) as data:
                raw = {name: torch.from_numpy(np.array(data[name])) for name in data.files}
        except (OSError, ValueError) as e:
            raise CoderLoadError(f"cannot read {npz}: {e}; re-download the file") from e
        where = npz
    elif st.is_file():
        raw, where = read_safetensors(st), st
    else:
        raise CoderLoadError(
            f"missing params.npz (or params.safetensors) in {folder}: a Gemma Scope coder needs it"
        )
    by_lower = {name.lower(): t for name, t in raw.items()}
    return {k: by_lower[k.lower()] for k in KEYS if k.lower() in by_lower}, where


def load(folder: Path) -> GemmaScopeCoder:
    folder = Path(folder)
    w, where = read_params(folder)
    require(w, KEYS, where)
    d_in, d_sae = w["W_enc"].shape
    d_out = w["b_dec"].shape[0]
    check_shape("W_dec", w["W_dec"], (d_sae, d_out), where)
    check_shape("b_enc", w["b_enc"], (d_sae,), where)
    check_shape("threshold", w["threshold"], (d_sae,), where)
    return GemmaScopeCoder(
        W_enc=as_float(w["W_enc"]),  # type: ignore[arg-type]
        b_enc=as_float(w["b_enc"]),
        W_dec=as_float(w["W_dec"]),  # type: ignore[arg-type]
        b_dec=as_float(w["b_dec"]),
        activation="jumprelu",
        threshold=as_float(w["threshold"]),
    )
