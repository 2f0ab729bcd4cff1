"""Set-up shared by the LLM stages: the run's vocab, seed and an LLM client."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from autointerp.config import RunConfig
from autointerp.llm.client import LLMClient, create_client
from autointerp.llm.config import LLMConfig
from autointerp.text import Vocab, vocab_for

log = logging.getLogger(__name__)


def subject_model(run_dir: Path, config: RunConfig, hookpoint: str) -> str:
    """The subject model the examples' token ids belong to (from the cache's meta.json)."""
    meta = Path(run_dir) / "cache" / hookpoint / "meta.json"
    if meta.is_file():
        return str(json.loads(meta.read_text()).get("model") or config.subject.model)
    return config.subject.model


def run_vocab(run_dir: Path, config: RunConfig, hookpoint: str) -> Vocab:
    return vocab_for(subject_model(run_dir, config, hookpoint))


def open_client(
    config: RunConfig, run_dir: Path, backend: str | None = None, cache_shard: str | None = None
) -> LLMClient:
    """The run's client; ``backend='lexical'`` forces the offline baseline; ``cache_shard``
    for a worker process (its own response-cache write file)."""
    llm = config.llm if backend is None else LLMConfig(model=backend)
    return create_client(llm, run_dir, cache_shard)
