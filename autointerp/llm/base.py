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
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.DOTALL)  # reasoning models' scratchpad
_DECODER = json.JSONDecoder()


def _check(value: Any, schema: dict[str, Any] | None) -> None:
    if not schema:
        return
    kind = schema.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, got {type(value).__name__}")
        missing = [k for k in schema.get("required", []) if k not in value]
        if missing:
            raise ValueError(f"JSON object lacks required keys {missing}")
    elif kind == "array" and not isinstance(value, list):
        raise ValueError(f"expected a JSON array, got {type(value).__name__}")


def _embedded(text: str, schema: dict[str, Any] | None) -> Any:
    """The last outermost JSON value in ``text`` that fits ``schema``: an answer with prose
    before or after its JSON, or after a reasoning block (``<think>...</think>``)."""
    text = _THINK.sub("", text)
    found, i = None, 0
    while i < len(text):
        if text[i] not in "{[":
            i += 1
            continue
        try:
            value, end = _DECODER.raw_decode(text, i)
            _check(value, schema)
        except ValueError:  # not JSON here, or JSON that does not fit: look inside it
            i += 1
            continue
        found, i = (value,), end
    if found is None:
        raise ValueError("no JSON value that fits the schema in the answer")
    return found[0]


def parse_json(text: str, schema: dict[str, Any] | None = None) -> Any:
    """Parse a model's JSON answer (tolerating a Markdown code fence, prose around the JSON
    and a reasoning block before it); check the schema's top-level type and required keys.
    Raises ValueError when it does not fit."""
    m = _FENCE.match(text)
    try:
        value = json.loads(m.group(1) if m else text)
    except ValueError:
        return _embedded(text, schema)
    _check(value, schema)
    return value
