"""sae-lens: ``cfg.json`` + ``sae_weights.safetensors``.

``W_enc`` [d_in, d_sae], ``b_enc`` [d_sae], ``W_dec`` [d_sae, d_out], ``b_dec`` [d_out], and
``threshold`` (or ``log_threshold``) [d_sae] for JumpReLU. Both config styles are read: v6
(``architecture`` "standard" | "topk" | "jumprelu", top-level ``k``) and the older one
(``activation_fn_str`` / ``activation_fn_kwargs``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from autointerp.coders._io import as_float, check_shape, read_json, read_safetensors, require
from autointerp.coders.base import Activation, AffineSparseCoder, CoderLoadError

log = logging.getLogger(__name__)

FILES = ("cfg.json", "sae_weights.safetensors")
SUPPORTED_NORMALIZATION = (None, "none")


class SaeLensCoder(AffineSparseCoder):
    format_name = "sae_lens"


def _activation(cfg: dict[str, Any], folder: Path) -> tuple[Activation, int | None]:
    arch = str(cfg.get("architecture", "standard")).lower()
    fn = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if arch in ("topk", "batchtopk") or fn == "topk":
        k = cfg.get("k", kwargs.get("k"))
        if k is None:
            raise CoderLoadError(f"{folder / 'cfg.json'} is a topk coder without 'k'")
        if arch == "batchtopk":
            log.info("sae-lens batchtopk coder %s: encoding with per-token top-k", folder)
        return "topk", int(k)
    if arch == "jumprelu":
        return "jumprelu", None
    if arch == "standard" and fn == "relu":
        return "relu", None
    raise CoderLoadError(
        f"sae-lens coder in {folder} has architecture '{arch}' with activation '{fn}'; "
        "supported: standard (relu), topk, jumprelu"
    )


def load(folder: Path) -> SaeLensCoder:
    folder = Path(folder)
    cfg = read_json(folder / "cfg.json")
    w = read_safetensors(folder / "sae_weights.safetensors")
    where = folder / "sae_weights.safetensors"
    require(w, ["W_enc", "W_dec", "b_dec"], where)
    norm = cfg.get("normalize_activations")
    if norm not in SUPPORTED_NORMALIZATION:
        raise CoderLoadError(
            f"sae-lens coder in {folder} uses normalize_activations='{norm}', which is not "
            "supported: fold the scaling into the weights (sae-lens fold_activation_norm_"
            "scaling_factor) and save it with normalize_activations='none'"
        )
    if cfg.get("finetuning_scaling_factor"):
        raise CoderLoadError(f"sae-lens coder in {folder} uses finetuning_scaling_factor")
    activation, k = _activation(cfg, folder)
    W_enc = w["W_enc"]
    d_in, d_sae = W_enc.shape
    if "d_in" in cfg and "d_sae" in cfg:
        check_shape("W_enc", W_enc, (int(cfg["d_in"]), int(cfg["d_sae"])), where)
    d_out = w["b_dec"].shape[0]
    check_shape("W_dec", w["W_dec"], (d_sae, d_out), where)
    b_enc = w.get("b_enc")
    if b_enc is not None:
        check_shape("b_enc", b_enc, (d_sae,), where)
    threshold: torch.Tensor | None = None
    if activation == "jumprelu":
        if "threshold" in w:
            threshold = w["threshold"]
        elif "log_threshold" in w:
            threshold = w["log_threshold"].float().exp()
        else:
            raise CoderLoadError(f"{where} is a jumprelu coder without 'threshold' tensor")
        check_shape("threshold", threshold, (d_sae,), where)
    apply_b_dec = bool(cfg.get("apply_b_dec_to_input", True))
    if apply_b_dec and d_out != d_in:
        raise CoderLoadError(
            f"sae-lens coder in {folder} has d_in {d_in} != d_out {d_out} with "
            "apply_b_dec_to_input true"
        )
    b_dec = as_float(w["b_dec"])
    return SaeLensCoder(
        W_enc=as_float(W_enc),  # type: ignore[arg-type]
        b_enc=as_float(b_enc),
        W_dec=as_float(w["W_dec"]),  # type: ignore[arg-type]
        b_dec=b_dec,
        activation=activation,
        input_bias=b_dec if apply_b_dec else None,
        k=k,
        threshold=as_float(threshold),
        rescale_by_decoder_norm=bool(cfg.get("rescale_acts_by_decoder_norm", False)),
        capture="input" if cfg.get("capture") == "input" else "output",
    )
