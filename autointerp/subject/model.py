"""Load the subject model: any Hugging Face causal LM, by hub id or local directory."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from autointerp.config import SubjectConfig

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class SubjectLoadError(RuntimeError):
    """The subject model or its tokenizer cannot be loaded (one-line message with the fix)."""


def resolve_device(spec: str) -> torch.device:
    """``auto`` = CUDA when available, else CPU; otherwise any torch device string."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ValueError(f"unknown device '{spec}': use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{spec}' requested but CUDA is not available: use auto or cpu")
    return device


def resolve_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``auto`` = bfloat16 on CUDA devices that support it, float32 elsewhere."""
    if spec == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return _DTYPES[spec]


def _looks_like_path(model: str) -> bool:
    return model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def load_subject(
    cfg: SubjectConfig, device: torch.device | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The causal LM (eval mode, on ``device``) and its tokenizer."""
    device = device or resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    local = Path(cfg.model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise SubjectLoadError(
                f"model directory {local} has no config.json: pass a folder saved with "
                "save_pretrained, or a hub id"
            )
        source = str(local)
    elif _looks_like_path(cfg.model):
        raise SubjectLoadError(
            f"model directory {cfg.model} does not exist: pass an existing folder or a hub id"
        )
    else:
        source = cfg.model
    kwargs = {"revision": cfg.revision, "local_files_only": cfg.local_files_only}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        hint = (
            "the files are not in the local cache: download them first or set "
            "local_files_only=false"
            if cfg.local_files_only
            else "check the hub id, the revision, the network and HF_TOKEN"
        )
        raise SubjectLoadError(f"cannot load model {cfg.model} ({_one_line(e)}): {hint}") from e
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    model = model.to(device).eval()
    model.requires_grad_(False)
    log.info("loaded %s (%s) on %s as %s", cfg.model, type(model).__name__, device, dtype)
    return model, tokenizer
