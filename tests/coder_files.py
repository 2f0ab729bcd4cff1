"""Write tiny sparse coders in every supported on-disk format, from random weights.

Each ``write_*`` function writes the files exactly as the original library saves them and
returns a :class:`WrittenCoder` holding the weights and a dense reference ``encode`` written in
plain torch from the original library's semantics (independently of ``autointerp.coders``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


@dataclass
class WrittenCoder:
    """A coder written to ``folder``: its weights and a dense reference encode."""

    folder: Path
    d_in: int
    n_latents: int
    weights: dict[str, torch.Tensor]
    config: dict = field(default_factory=dict)
    reference: Callable[[torch.Tensor], torch.Tensor] | None = None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense reference activations ``[N, n_latents]`` (float32)."""
        assert self.reference is not None
        return self.reference(x.float())


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * scale


def _affine(g: torch.Generator, d_in: int, n_latents: int) -> dict[str, torch.Tensor]:
    """Random W_enc [d_in, n], b_enc [n], W_dec [n, d_in], b_dec [d_in] (in that draw order)."""
    return {
        "W_enc": _randn(g, d_in, n_latents, scale=d_in**-0.5),
        "b_enc": _randn(g, n_latents, scale=0.1),
        "W_dec": _randn(g, n_latents, d_in, scale=d_in**-0.5),
        "b_dec": _randn(g, d_in, scale=0.1),
    }


def _topk_dense(acts: torch.Tensor, k: int) -> torch.Tensor:
    vals, idx = acts.topk(k, dim=-1)
    return torch.zeros_like(acts).scatter_(-1, idx, vals)


def write_sparsify(
    folder: Path,
    d_in: int,
    n_latents: int,
    k: int,
    transcode: bool = False,
    d_out: int | None = None,
    seed: int = 0,
) -> WrittenCoder:
    """EleutherAI sparsify: ``cfg.json`` + ``sae.safetensors`` (encoder.weight [n, d_in])."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = _gen(seed)
    d_out = d_out or d_in
    w = {
        "encoder.weight": _randn(g, n_latents, d_in, scale=d_in**-0.5),
        "encoder.bias": _randn(g, n_latents, scale=0.1),
        "W_dec": _randn(g, n_latents, d_out, scale=d_in**-0.5),
        "b_dec": _randn(g, d_out, scale=0.1),
    }
    save_file({name: t.contiguous() for name, t in w.items()}, str(folder / "sae.safetensors"))
    cfg = {
        "expansion_factor": max(1, n_latents // d_in),
        "normalize_decoder": True,
        "num_latents": n_latents,
        "k": k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": transcode,
        "d_in": d_in,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg))

    def reference(x: torch.Tensor) -> torch.Tensor:
        sae_in = x if transcode else x - w["b_dec"]
        pre = torch.relu(sae_in @ w["encoder.weight"].T + w["encoder.bias"])
        return _topk_dense(pre, k)

    return WrittenCoder(folder, d_in, n_latents, w, cfg, reference)


def write_sae_lens(
    folder: Path,
    d_in: int,
    n_latents: int,
    architecture: str = "standard",
    k: int = 4,
    apply_b_dec_to_input: bool = True,
    legacy_cfg: bool = False,
    log_threshold: bool = False,
    seed: int = 0,
) -> WrittenCoder:
    """sae-lens: ``cfg.json`` + ``sae_weights.safetensors`` (W_enc [d_in, d_sae]).

    ``architecture`` is "standard" (ReLU), "topk" or "jumprelu". ``legacy_cfg`` writes the
    pre-v6 config style (``activation_fn_str`` / ``activation_fn_kwargs`` and a top-level
    ``hook_name``); ``log_threshold`` stores a JumpReLU's ``log_threshold`` instead of
    ``threshold``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = _gen(seed)
    w = {
        **_affine(g, d_in, n_latents),
    }
    threshold = torch.rand(n_latents, generator=g) * 0.3 + 0.01
    saved = dict(w)
    if architecture == "jumprelu":
        if log_threshold:
            saved["log_threshold"] = threshold.log()
        else:
            saved["threshold"] = threshold
    saved = {n: t.contiguous() for n, t in saved.items()}
    save_file(saved, str(folder / "sae_weights.safetensors"))
    cfg: dict = {
        "d_in": d_in,
        "d_sae": n_latents,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": apply_b_dec_to_input,
        "normalize_activations": "none",
    }
    if legacy_cfg:
        cfg["architecture"] = "jumprelu" if architecture == "jumprelu" else "standard"
        cfg["activation_fn_str"] = "topk" if architecture == "topk" else "relu"
        cfg["activation_fn_kwargs"] = {"k": k} if architecture == "topk" else {}
        cfg["hook_name"] = "blocks.0.hook_resid_post"
        cfg["finetuning_scaling_factor"] = False
    else:
        cfg["architecture"] = architecture
        cfg["metadata"] = {"hook_name": "blocks.0.hook_resid_post", "model_name": "tiny"}
        if architecture == "topk":
            cfg["k"] = k
    (folder / "cfg.json").write_text(json.dumps(cfg))

    def reference(x: torch.Tensor) -> torch.Tensor:
        sae_in = x - w["b_dec"] if apply_b_dec_to_input else x
        pre = sae_in @ w["W_enc"] + w["b_enc"]
        if architecture == "topk":
            vals, idx = pre.topk(k, dim=-1)
            return torch.zeros_like(pre).scatter_(-1, idx, torch.relu(vals))
        if architecture == "jumprelu":
            return torch.relu(pre) * (pre > threshold)
        return torch.relu(pre)

    if architecture == "jumprelu":
        w["threshold"] = threshold
    return WrittenCoder(folder, d_in, n_latents, w, cfg, reference)


def write_gemma_scope(
    folder: Path, d_in: int, n_latents: int, use_safetensors: bool = False, seed: int = 0
) -> WrittenCoder:
    """Gemma Scope: ``params.npz`` (W_enc, b_enc, W_dec, b_dec, threshold) or
    ``params.safetensors`` with the same names in lower case (w_enc, w_dec, ...)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = _gen(seed)
    w = {
        **_affine(g, d_in, n_latents),
        "threshold": torch.rand(n_latents, generator=g) * 0.3 + 0.01,
    }
    if use_safetensors:
        lower = {name.lower(): t.contiguous() for name, t in w.items()}
        save_file(lower, str(folder / "params.safetensors"))
    else:
        np.savez(folder / "params.npz", **{name: t.numpy() for name, t in w.items()})

    def reference(x: torch.Tensor) -> torch.Tensor:
        pre = x @ w["W_enc"] + w["b_enc"]
        return (pre > w["threshold"]) * torch.relu(pre)

    return WrittenCoder(folder, d_in, n_latents, w, {}, reference)


def write_dictionary_learning(
    folder: Path,
    d_in: int,
    n_latents: int,
    dict_class: str = "AutoEncoder",
    k: int = 4,
    threshold: float = -1.0,
    seed: int = 0,
) -> WrittenCoder:
    """dictionary_learning (saprmarks): ``ae.pt`` (a state dict) + ``config.json``.

    ``dict_class``: "AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE" or
    "JumpReluAutoEncoder". ``threshold`` is the (Batch)TopK inference threshold buffer
    (-1 = never set, so TopK by ``k`` is used).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    g = _gen(seed)
    sd: dict[str, torch.Tensor]
    if dict_class == "AutoEncoder":
        sd = {
            "bias": _randn(g, d_in, scale=0.1),
            "encoder.weight": _randn(g, n_latents, d_in, scale=d_in**-0.5),
            "encoder.bias": _randn(g, n_latents, scale=0.1),
            "decoder.weight": _randn(g, d_in, n_latents, scale=d_in**-0.5),
        }
    elif dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        k_dtype = torch.int32 if dict_class == "AutoEncoderTopK" else torch.int64
        sd = {
            "k": torch.tensor(k, dtype=k_dtype),
            "threshold": torch.tensor(threshold, dtype=torch.float32),
            "decoder.weight": _randn(g, d_in, n_latents, scale=d_in**-0.5),
            "encoder.weight": _randn(g, n_latents, d_in, scale=d_in**-0.5),
            "encoder.bias": _randn(g, n_latents, scale=0.1),
            "b_dec": _randn(g, d_in, scale=0.1),
        }
    elif dict_class == "JumpReluAutoEncoder":
        sd = {
            **_affine(g, d_in, n_latents),
            "threshold": torch.rand(n_latents, generator=g) * 0.3 + 0.01,
        }
    else:
        raise ValueError(f"unknown dict_class {dict_class}")
    torch.save(sd, folder / "ae.pt")
    trainer = {
        "trainer_class": {"AutoEncoder": "StandardTrainer", "AutoEncoderTopK": "TopKTrainer"}.get(
            dict_class, dict_class.replace("SAE", "Trainer").replace("AutoEncoder", "Trainer")
        ),
        "dict_class": dict_class,
        "activation_dim": d_in,
        "dict_size": n_latents,
        "lm_name": "tiny",
        "layer": 0,
        "submodule_name": "resid_post_layer_0",
        "device": "cpu",
    }
    if dict_class in ("AutoEncoderTopK", "BatchTopKSAE"):
        trainer["k"] = k
    cfg = {"trainer": trainer, "buffer": {"d_submodule": d_in, "ctx_len": 128}}
    (folder / "config.json").write_text(json.dumps(cfg, indent=4))

    def reference(x: torch.Tensor) -> torch.Tensor:
        if dict_class == "AutoEncoder":
            return torch.relu((x - sd["bias"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
        if dict_class == "JumpReluAutoEncoder":
            pre = x @ sd["W_enc"] + sd["b_enc"]
            return torch.relu(pre * (pre > sd["threshold"]))
        post = torch.relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
        if dict_class == "BatchTopKSAE" and threshold > 0:
            return post * (post > threshold)
        return _topk_dense(post, k)

    return WrittenCoder(folder, d_in, n_latents, sd, cfg, reference)
