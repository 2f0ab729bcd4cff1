"""Dry runs: while :func:`recording` is active, every client gets a backend that records each
request and answers it like the lexical baseline (free, instant, the same answer shapes), so a
stage builds exactly the requests it would send, without sending any."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field

from autointerp.llm.base import Backend
from autointerp.llm.config import LLMConfig
from autointerp.llm.types import LLMRequest, LLMResponse


@dataclass
class Recorded:
    """One distinct request (by cache key) a stage would send, and the baseline's answer."""

    key: str
    backend: str
    model: str
    request: LLMRequest
    answer: str


@dataclass
class Recorder:
    requests: dict[str, Recorded] = field(default_factory=dict)

    def add(
        self,
        backend: str,
        model: str,
        request: LLMRequest,
        answer: str,
        endpoint: str | None = None,
    ) -> None:
        key = request.cache_key(backend, model, endpoint)  # the client's key (endpoint too)
        if key not in self.requests:  # a repeat would come from the response cache
            self.requests[key] = Recorded(key, backend, model, request, answer)


_ACTIVE: list[Recorder] = []


def active() -> Recorder | None:
    return _ACTIVE[-1] if _ACTIVE else None


@contextlib.contextmanager
def recording() -> Iterator[Recorder]:
    """Clients created inside get a :class:`DryRunBackend` reporting to the yielded recorder."""
    rec = Recorder()
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        _ACTIVE.remove(rec)


class DryRunBackend(Backend):
    """Named after the configured backend and model (so its requests' cache keys are the real
    ones), answered by the lexical baseline, never sent anywhere."""

    local = True
    cacheable = False
    limited = False  # the configured rate limits are for the real API, not this stand-in
    dry = True  # its client's usage is not logged as if sent

    def __init__(self, config: LLMConfig, recorder: Recorder) -> None:
        from autointerp.llm.lexical import LexicalBackend

        self.name = config.backend
        self.model = config.model_name
        self.endpoint = config.endpoint
        self._recorder = recorder
        self._lexical = LexicalBackend()

    async def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            response = await self._lexical.complete(request)
        except Exception:  # a request the baseline cannot answer is still counted
            response = LLMResponse(text="{}", parsed={})
        parsed = response.parsed
        if isinstance(parsed, dict) and "labels" in parsed and request.json_schema is None:
            text = "Yes" if parsed["labels"] and parsed["labels"][0] else "No"  # one window
        elif isinstance(parsed, dict) and "labels" in parsed:  # {"answers": [...]}
            text = json.dumps({"answers": parsed["labels"]})
        else:
            text = response.text or (json.dumps(parsed) if parsed else "")
        self._recorder.add(self.name, self.model, request, text, self.endpoint)
        response.backend, response.model = self.name, self.model
        return response
