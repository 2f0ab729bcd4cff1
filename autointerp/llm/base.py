"""What every backend implements, and the two kinds of failure it may raise."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from typing import Any

from autointerp.llm.types import LLMRequest, LLMResponse


class RetryableError(Exception):
    """A transient failure (429, 5xx, timeout, dropped connection): try again later."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(Exception):
    """A failure that another attempt will not fix (bad request, auth, unknown model)."""


class Backend(ABC):
    """One model behind one API. ``complete`` makes a single attempt; retries, caching, limits
    and accounting live in :class:`autointerp.llm.client.LLMClient`."""

    name: str = ""
    model: str = ""
    local: bool = True  # local backends cost nothing
    cacheable: bool = True  # worth caching (the lexical baseline is not)
    baseline: bool = False
    limited: bool = True  # requests take the client's concurrency / rate slots

    @abstractmethod
    async def complete(self, request: LLMRequest) -> LLMResponse: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections / engines."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_json(text: str, schema: dict[str, Any] | None = None) -> Any:
    """Parse a model's JSON answer (tolerating a Markdown code fence); check the schema's
    top-level type and required keys. Raises ValueError when it does not fit."""
    m = _FENCE.match(text)
    value = json.loads(m.group(1) if m else text)
    if schema:
        kind = schema.get("type")
        if kind == "object":
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {type(value).__name__}")
            missing = [k for k in schema.get("required", []) if k not in value]
            if missing:
                raise ValueError(f"JSON object lacks required keys {missing}")
        elif kind == "array" and not isinstance(value, list):
            raise ValueError(f"expected a JSON array, got {type(value).__name__}")
    return value
