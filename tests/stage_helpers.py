"""Helpers shared by the explain/score tests: a synthetic sampled run and a config that points
the LLM layer at the fake OpenAI-compatible server."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from fake_server import FakeServer
from synthetic_cache import random_cache

from autointerp.config import RunConfig, load_config
from autointerp.sampling import SampleConfig
from autointerp.sampling.build import build_examples


def synthetic_run(run: Path, n_latents: int) -> Path:
    """random_cache (latent l fires on token l % 50) + examples, window_len 16."""
    random_cache(run, n_seqs=300, n_latents=n_latents)
    decoder = torch.randn(n_latents, 8, generator=torch.Generator().manual_seed(0))
    build_examples(run, SampleConfig(seed=1, window_len=16), decoder=decoder, progress=False)
    return run


def copy_run(base: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(base, dst)
    return dst


def served(run: Path, server: FakeServer, **overrides: object) -> RunConfig:
    """The run's config with the openai backend on the fake server (fast retries)."""
    fields = {
        "llm.model": "openai:gpt-4o-mini",
        "llm.base_url": server.base_url,
        "llm.api_key_env": "FAKE_LLM_KEY",
        "llm.max_attempts": 2,
        "llm.backoff_initial_s": 0.01,
        "llm.backoff_max_s": 0.02,
        "llm.timeout_s": 5.0,
        "llm.concurrency": 8,
    }
    return load_config(None, {"run_dir": str(run), **fields, **overrides})
