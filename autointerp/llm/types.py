"""Requests and responses of the LLM layer: the one interface explainers and scorers use."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # -inf logprobs (impossible tokens) must survive the JSON round trip through the cache.
    model_config = ConfigDict(extra="forbid", ser_json_inf_nan="constants")


class ChatMessage(_Model):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class SamplingParams(_Model):
    """Sampling parameters shared by every backend (unset means the backend's default)."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = Field(256, gt=0)
    # plain mutable defaults (pydantic copies them per instance): a default_factory makes
    # model_construct inspect the factory's signature on every call, a hot path here
    stop: list[str] = []
    seed: int | None = None


class TopLogprob(_Model):
    token: str
    logprob: float
    token_id: int | None = None


class TokenLogprob(_Model):
    """One position: the token there, its logprob (None where undefined: the first prompt token)
    and the top-k alternatives."""

    token: str
    logprob: float | None
    token_id: int | None = None
    top: list[TopLogprob] = []


class LLMRequest(_Model):
    """One generation. Either ``messages`` (chat) or ``prompt`` (raw completion).

    ``task`` is an optional structured description of the job (see docs/llm.md) used by the
    lexical baseline and ignored by LLM backends. ``tags`` (e.g. ``{"latent": "layers.1:17"}``)
    are for accounting only. Neither is part of the cache key. ``check`` (never serialised)
    is the task's validation of a parsed answer: it returns why the answer is unusable (one
    item short, "maybe", an empty explanation) or None; the client retries a failing answer
    within ``llm.json_attempts`` and never caches it (docs/llm.md).
    """

    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    sampling: SamplingParams = Field(default_factory=SamplingParams)
    json_schema: dict[str, Any] | None = None
    logprobs: int | None = Field(None, ge=0, le=20, description="top-k at generated positions")
    prompt_logprobs: int | None = Field(None, ge=0, le=20, description="top-k at prompt positions")
    task: dict[str, Any] | None = None
    tags: dict[str, str | int] = {}
    check: Callable[[Any], str | None] | None = Field(None, exclude=True, repr=False)

    def cache_key(self, backend: str, model: str, endpoint: str | None = None) -> str:
        """sha256 of the canonical JSON of everything that determines the answer, the server
        (``endpoint``: a base_url; two servers serving one model name never share answers)
        included when set."""
        payload = {
            "backend": backend,
            "model": model,
            "messages": [m.model_dump() for m in self.messages] if self.messages else None,
            "prompt": self.prompt,
            "sampling": self.sampling.model_dump(),
            "json_schema": self.json_schema,
            "logprobs": self.logprobs,
            "prompt_logprobs": self.prompt_logprobs,
        }
        if endpoint:
            payload["endpoint"] = endpoint
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def approx_prompt_tokens(self) -> int:
        """Rough size of the prompt (4 characters a token) for tokens-per-minute limits."""
        if self.messages:
            return sum(len(m.content) for m in self.messages) // 4 + 4 * len(self.messages)
        return len(self.prompt or "") // 4 + 1


class LLMResponse(_Model):
    """What a backend answered. ``error`` is set (and ``ok`` False) when it failed for good;
    ``text`` then keeps whatever raw text there was (e.g. unparseable JSON)."""

    text: str = ""
    parsed: Any = None
    error: str | None = None
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cost_usd: float = 0.0
    attempts: int = 1
    backend: str = ""
    model: str = ""
    cached: bool = False
    metadata: dict[str, Any] = {}

    @property
    def ok(self) -> bool:
        return self.error is None
