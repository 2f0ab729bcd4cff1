"""dictionary_learning (saprmarks): ``ae.pt`` (a torch state dict) + ``config.json``.

``config.json`` names the class in ``trainer.dict_class``:
- ``AutoEncoder``: ``relu(encoder(x - bias))``; ``decoder.weight`` is [d_in, n].
- ``AutoEncoderTopK`` / ``BatchTopKSAE`` / ``MatryoshkaBatchTopKSAE``:
  ``relu(encoder(x - b_dec))`` then top-k by the ``k`` buffer; BatchTopK-style classes use
  their inference ``threshold`` buffer instead when it was set (> 0).
- ``JumpReluAutoEncoder``: ``relu(pre * (pre > threshold))`` with ``pre = x @ W_enc + b_enc``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from autointerp.coders._io import as_float, check_shape, read_json, require
from autointerp.coders.base import AffineSparseCoder, CoderLoadError

log = logging.getLogger(__name__)

FILES = ("ae.pt", "config.json")
TOPK_CLASSES = ("AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE")
SUPPORTED = ("AutoEncoder", *TOPK_CLASSES, "JumpReluAutoEncoder")


class DictionaryLearningCoder(AffineSparseCoder):
    format_name = "dictionary_learning"


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CoderLoadError(f"missing {path.name} in {path.parent}: the coder folder needs it")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CoderLoadError(f"cannot read {path}: {e}; re-download the file") from e
    if not isinstance(sd, dict):
        raise CoderLoadError(f"{path} does not hold a state dict")
    return sd


def infer_dict_class(sd: dict[str, torch.Tensor]) -> str | None:
    """The dictionary class a state dict belongs to, from its key names."""
    keys = set(sd)
    if {"bias", "encoder.weight", "decoder.weight"} <= keys:
        return "AutoEncoder"
    if {"encoder.weight", "decoder.weight", "b_dec", "k"} <= keys:
        return "AutoEncoderTopK"
    if {"W_enc", "W_dec", "b_dec", "k"} <= keys:
        return "MatryoshkaBatchTopKSAE"
    if {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"} <= keys:
        return "JumpReluAutoEncoder"
    return None


def load(folder: Path) -> DictionaryLearningCoder:
    folder = Path(folder)
    where = folder / "ae.pt"
    sd = read_state_dict(where)
    if (folder / "config.json").is_file():
        cfg = read_json(folder / "config.json")
        dict_class = (cfg.get("trainer") or {}).get("dict_class") or infer_dict_class(sd)
    else:
        dict_class = infer_dict_class(sd)
        log.warning("no config.json next to %s; dict_class %s from keys", where, dict_class)
    if dict_class not in SUPPORTED:
        raise CoderLoadError(
            f"dictionary_learning coder in {folder} has dict_class '{dict_class}'; "
            f"supported: {', '.join(SUPPORTED)}"
        )
    if dict_class == "AutoEncoder":
        require(sd, ["bias", "encoder.weight", "encoder.bias", "decoder.weight"], where)
        n, d_in = sd["encoder.weight"].shape
        check_shape("decoder.weight", sd["decoder.weight"], (d_in, n), where)
        bias = as_float(sd["bias"])
        return DictionaryLearningCoder(
            W_enc=as_float(sd["encoder.weight"].T),  # type: ignore[arg-type]
            b_enc=as_float(sd["encoder.bias"]),
            W_dec=as_float(sd["decoder.weight"].T),  # type: ignore[arg-type]
            b_dec=bias,
            activation="relu",
            input_bias=bias,
        )
    if dict_class == "JumpReluAutoEncoder":
        require(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], where)
        d_in, n = sd["W_enc"].shape
        check_shape("W_dec", sd["W_dec"], (n, d_in), where)
        return DictionaryLearningCoder(
            W_enc=as_float(sd["W_enc"]),  # type: ignore[arg-type]
            b_enc=as_float(sd["b_enc"]),
            W_dec=as_float(sd["W_dec"]),  # type: ignore[arg-type]
            b_dec=as_float(sd["b_dec"]),
            activation="jumprelu",
            threshold=as_float(sd["threshold"]),
        )
    # top-k families: nn.Linear layout (encoder.weight) or raw parameters (W_enc, Matryoshka)
    if "encoder.weight" in sd:
        require(sd, ["encoder.weight", "encoder.bias", "decoder.weight", "b_dec", "k"], where)
        W_enc, W_dec = sd["encoder.weight"].T, sd["decoder.weight"].T
        b_enc = sd["encoder.bias"]
    else:
        require(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "k"], where)
        W_enc, W_dec, b_enc = sd["W_enc"], sd["W_dec"], sd["b_enc"]
    d_in, n = W_enc.shape
    check_shape("decoder", W_dec, (n, d_in), where)
    k = int(sd["k"].item())
    thr = float(sd["threshold"].item()) if "threshold" in sd else -1.0
    use_threshold = dict_class != "AutoEncoderTopK" and thr > 0
    b_dec = as_float(sd["b_dec"])
    return DictionaryLearningCoder(
        W_enc=as_float(W_enc),  # type: ignore[arg-type]
        b_enc=as_float(b_enc),
        W_dec=as_float(W_dec),  # type: ignore[arg-type]
        b_dec=b_dec,
        activation="jumprelu" if use_threshold else "topk",
        input_bias=b_dec,
        k=k,
        threshold=thr if use_threshold else None,
    )
