"""Token and cost accounting: per run and per request tag (e.g. per latent)."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel

from autointerp.llm.config import Price
from autointerp.llm.types import LLMResponse


def call_cost(price: Price | None, prompt_tokens: int, completion_tokens: int) -> float:
    if price is None:
        return 0.0
    return (prompt_tokens * price.input + completion_tokens * price.output) / 1e6


class Usage(BaseModel):
    """Sums over responses. ``cost_usd`` is what this run paid; answers served from the cache
    add to ``cached`` and ``saved_usd`` instead."""

    requests: int = 0
    cached: int = 0
    errors: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    latency_s: float = 0.0

    def add(self, r: LLMResponse) -> None:
        self.requests += 1
        self.errors += 0 if r.ok else 1
        if r.cached:
            self.cached += 1
            self.saved_usd += r.cost_usd
            return
        self.attempts += r.attempts
        self.prompt_tokens += r.prompt_tokens
        self.completion_tokens += r.completion_tokens
        self.cost_usd += r.cost_usd
        self.latency_s += r.latency_s


class UsageTracker:
    """Run totals plus totals per ``(tag, value)`` of :attr:`LLMRequest.tags`."""

    def __init__(self) -> None:
        self.total = Usage()
        self._by_tag: dict[str, dict[str, Usage]] = defaultdict(lambda: defaultdict(Usage))

    def add(self, response: LLMResponse, tags: dict[str, str | int]) -> None:
        self.total.add(response)
        for key, value in tags.items():
            self._by_tag[key][str(value)].add(response)

    def by(self, tag: str) -> dict[str, Usage]:
        """Usage per value of one tag, e.g. ``tracker.by("latent")["17"]``."""
        return dict(self._by_tag.get(tag, {}))

    def summary(self) -> dict[str, Any]:
        return self.total.model_dump()
