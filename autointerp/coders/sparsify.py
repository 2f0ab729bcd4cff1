"""EleutherAI sparsify: ``cfg.json`` + ``sae.safetensors``, one folder per hookpoint.

``encoder.weight`` [n, d_in], ``encoder.bias`` [n], ``W_dec`` [n, d_out], ``b_dec`` [d_out].
Encoding is ``topk(relu(encoder(x - b_dec)))``; transcoders (``transcode: true``) read the
hooked module's *input* and do not subtract ``b_dec``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from autointerp.coders._io import as_float, check_shape, read_json, read_safetensors, require
from autointerp.coders.base import AffineSparseCoder, CoderLoadError

log = logging.getLogger(__name__)

FILES = ("cfg.json", "sae.safetensors")


class SparsifyCoder(AffineSparseCoder):
    format_name = "sparsify"


def load(folder: Path) -> SparsifyCoder:
    folder = Path(folder)
    cfg = read_json(folder / "cfg.json")
    w = read_safetensors(folder / "sae.safetensors")
    require(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], folder / "sae.safetensors")
    activation = cfg.get("activation", "topk")
    if activation != "topk":
        raise CoderLoadError(
            f"sparsify coder in {folder} uses activation '{activation}'; only 'topk' is supported"
        )
    if cfg.get("multi_topk"):
        log.info("sparsify coder %s was trained with multi_topk; encoding with plain top-k", folder)
    enc = w["encoder.weight"]
    n_latents, d_in = enc.shape
    if "d_in" in cfg and int(cfg["d_in"]) != d_in:
        check_shape("encoder.weight", enc, (n_latents, int(cfg["d_in"])), folder)
    num_latents = int(cfg.get("num_latents") or 0)
    if num_latents and num_latents != n_latents:
        check_shape("encoder.weight", enc, (num_latents, d_in), folder)
    check_shape("encoder.bias", w["encoder.bias"], (n_latents,), folder)
    d_out = w["b_dec"].shape[0]
    check_shape("W_dec", w["W_dec"], (n_latents, d_out), folder)
    transcode = bool(cfg.get("transcode", False))
    if not transcode and d_out != d_in:
        raise CoderLoadError(
            f"sparsify coder in {folder} has d_in {d_in} != d_out {d_out} but transcode is false"
        )
    if "k" not in cfg:
        raise CoderLoadError(f"{folder / 'cfg.json'} lacks 'k': a sparsify TopK coder needs it")
    b_dec = as_float(w["b_dec"])
    return SparsifyCoder(
        W_enc=as_float(enc.T),  # type: ignore[arg-type]
        b_enc=as_float(w["encoder.bias"]),
        W_dec=as_float(w["W_dec"]),  # type: ignore[arg-type]
        b_dec=b_dec,
        activation="topk",
        input_bias=None if transcode else b_dec,
        k=int(cfg["k"]),
        capture="input" if transcode else "output",
    )
