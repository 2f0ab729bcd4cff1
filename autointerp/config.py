"""Pydantic configuration for every stage: one YAML file plus CLI overrides, validated early.

The resolved config is written to ``run.yaml`` in the run directory. Secrets never live here:
API keys are read from environment variables whose *names* are configured.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from autointerp.explainers.config import ExplainConfig
from autointerp.llm.config import LLMConfig
from autointerp.runner.config import ExecutionConfig
from autointerp.sampling.config import SampleConfig
from autointerp.scorers.config import ScoreConfig

ASSETS = Path(__file__).parent / "assets" / "demo"
DEMO_MODEL = str(ASSETS / "lm")
DEMO_CODER = str(ASSETS / "sae")
DEMO_HOOKPOINT = "model.layers.1"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SubjectConfig(StrictModel):
    """The subject language model."""

    model: str = Field(DEMO_MODEL, description="Hugging Face hub id or local directory")
    revision: str | None = None
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    device: str = Field("auto", description="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1'")
    local_files_only: bool = False


class CoderConfig(StrictModel):
    """Where the sparse coders live: a folder (or hub id) holding one coder, or one sub-folder
    per hookpoint (the sparsify layout)."""

    path: str = Field(DEMO_CODER, description="hub id, hub id:subfolder, or local directory")
    revision: str | None = None


class DatasetConfig(StrictModel):
    """Text to run the model on."""

    source: str = Field(
        "stdlib",
        description="'stdlib' (the Python standard library's source), a local .txt/.jsonl/"
        ".parquet file or folder, or a Hugging Face dataset name",
    )
    name: str | None = Field(None, description="dataset config name (hub datasets)")
    split: str = "train"
    text_column: str = "text"
    streaming: bool = Field(True, description="stream hub datasets instead of downloading all")
    shuffle_seed: int | None = None


class CacheConfig(StrictModel):
    """Caching of sparse activations."""

    hookpoints: list[str] = Field(default_factory=lambda: [DEMO_HOOKPOINT])
    n_tokens: int = Field(1_000_000, gt=0)
    ctx_len: int = Field(64, ge=2)
    batch_size: int = Field(64, gt=0, description="windows per forward pass")
    max_memory_gb: float = Field(
        4.0,
        gt=0,
        description="memory budget of the whole cache stage (process RSS: model and coder "
        "included); chunks, the spill writer and the merge are sized to stay within it",
    )
    chunk_target_rows: int = Field(
        4_000_000,
        gt=0,
        description="nonzeros per resumable chunk aimed at (more for very large runs, so that "
        "there are at most ~256 chunks; never more than max_memory_gb allows)",
    )
    chunk_windows: int | None = Field(
        None, gt=0, description="at most this many windows per chunk (default: sized by bytes)"
    )
    shard_latents: int | None = Field(
        None, gt=0, description="latents per output shard; default sized from n_tokens"
    )
    shard_target_rows: int = Field(
        2_000_000, gt=0, description="nonzeros per output shard aimed at when sizing shards"
    )
    exclude_bos: bool = True

    @field_validator("hookpoints")
    @classmethod
    def _nonempty(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one hookpoint is needed (e.g. model.layers.1)")
        return v


class RunConfig(StrictModel):
    """Everything a run needs; each stage reads its own section."""

    run_dir: Path = Path("results/demo")
    seed: int = 0
    subject: SubjectConfig = Field(default_factory=SubjectConfig)
    coder: CoderConfig = Field(default_factory=CoderConfig)
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    explain: ExplainConfig = Field(default_factory=ExplainConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)

    def section_hash(self, *sections: str) -> str:
        """Stable hash of the named sections (what a stage's output depends on)."""
        payload = {s: getattr(self, s).model_dump(mode="json") for s in sections}
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value


# fields that may name a local file or folder (else a hub id or a keyword)
PATH_FIELDS = ("subject.model", "coder.path", "dataset.source")


def anchor_path(value: str, bases: list[Path]) -> str:
    """``value`` as an absolute path when it names a file or folder relative to one of
    ``bases`` (tried in order); unchanged otherwise (absolute, a hub id, a keyword)."""
    if not value or Path(value).is_absolute() or value.startswith("~"):
        return str(Path(value).expanduser()) if value.startswith("~") else value
    for base in bases:
        found = base / value
        if found.exists():
            return str(found.resolve())
    return value


def _anchor(data: dict[str, Any], bases: list[Path]) -> None:
    """Make the local paths of :data:`PATH_FIELDS` absolute, so that a run directory works
    from any current directory (``run.yaml`` and ``meta.json`` store what is resolved here)."""
    for dotted in PATH_FIELDS:
        section, _, name = dotted.partition(".")
        sub = data.get(section)
        if isinstance(sub, dict) and isinstance(sub.get(name), str):
            sub[name] = anchor_path(sub[name], bases)


def load_config(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> RunConfig:
    """Build a RunConfig from a YAML file (optional) and dotted overrides (``cache.n_tokens``).
    Local paths (model, coder, dataset) become absolute: relative ones are taken from the
    current directory, and in a run's own ``run.yaml`` from the run directory first."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"config file {p} does not exist; pass an existing YAML file")
        data = yaml.safe_load(p.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"config file {p} must hold a YAML mapping at top level")
        if p.name == "run.yaml":
            _anchor(data, [p.parent.resolve(), Path.cwd()])
    for key, value in (overrides or {}).items():
        if value is not None:
            _set_dotted(data, key, value)
    _anchor(data, [Path.cwd()])
    return RunConfig.model_validate(data)


def save_config(config: RunConfig, run_dir: Path | None = None) -> Path:
    """Write the resolved config to ``run.yaml`` (no secrets are ever part of it)."""
    run_dir = Path(run_dir or config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = run_dir / "run.yaml"
    tmp = out.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    tmp.replace(out)
    return out
