"""Set-up shared by the LLM stages: the run's vocab, seed and an LLM client."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from autointerp.config import RunConfig, anchor_path
from autointerp.llm.client import LLMClient, create_client
from autointerp.llm.config import LLMConfig
from autointerp.text import Vocab, vocab_for

log = logging.getLogger(__name__)


def subject_model(run_dir: Path, config: RunConfig, hookpoint: str) -> str:
    """The subject model the examples' token ids belong to (from the cache's meta.json); a
    relative folder (written by an older version) is looked up from the run directory, then
    from the current directory."""
    meta = Path(run_dir) / "cache" / hookpoint / "meta.json"
    model = config.subject.model
    if meta.is_file():
        model = str(json.loads(meta.read_text()).get("model") or model)
    return anchor_path(model, [Path(run_dir).resolve(), Path.cwd()])


def run_vocab(run_dir: Path, config: RunConfig, hookpoint: str) -> Vocab:
    """The subject model's vocab; a one-line error when the model can be found nowhere."""
    model = subject_model(run_dir, config, hookpoint)
    try:
        return vocab_for(model)
    except Exception as e:  # transformers' HFValidationError, OSError, ...
        raise ValueError(
            f"subject model {model!r} of {run_dir} is neither a folder (from the run directory "
            f"or {Path.cwd()}) nor a hub id that loads ({type(e).__name__}); point "
            f"subject.model in {Path(run_dir) / 'run.yaml'} at the model's folder or hub id"
        ) from None


def open_client(
    config: RunConfig, run_dir: Path, backend: str | None = None, cache_shard: str | None = None
) -> LLMClient:
    """The run's client; ``backend='lexical'`` forces the offline baseline; ``cache_shard``
    for a worker process (its own response-cache write file)."""
    llm = config.llm if backend is None else LLMConfig(model=backend)
    return create_client(llm, run_dir, cache_shard)
