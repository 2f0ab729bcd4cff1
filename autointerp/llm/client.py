"""``LLMClient``: a backend wrapped with the response cache, retries, limits and accounting.

Every request ends in an :class:`LLMResponse`; failures become responses with ``error`` set, so
one bad call never kills a batch of thousands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from autointerp.llm.base import Backend, FatalError, RetryableError, parse_json
from autointerp.llm.cache import ResponseCache
from autointerp.llm.config import LLMConfig
from autointerp.llm.limits import Limits
from autointerp.llm.types import LLMRequest, LLMResponse
from autointerp.llm.usage import UsageTracker, call_cost

log = logging.getLogger(__name__)


def make_backend(config: LLMConfig, run_dir: str | Path | None = None) -> Backend:
    """The backend named by ``config.model`` (imports heavy dependencies lazily); inside
    :func:`autointerp.llm.dry.recording`, a dry-run stand-in that sends nothing; with
    ``llm.batch.enabled``, the provider's Batch API (its jobs kept in ``run_dir``)."""
    from autointerp.llm import dry

    recorder = dry.active()
    if recorder is not None:
        return dry.DryRunBackend(config, recorder)
    if config.batch.enabled:
        from autointerp.llm.batch.backend import BatchBackend

        return BatchBackend(config, run_dir)
    if config.backend == "lexical":
        from autointerp.llm.lexical import LexicalBackend

        return LexicalBackend()
    if config.backend == "vllm":
        from autointerp.llm.vllm_backend import VLLMBackend

        return VLLMBackend(config)
    from autointerp.llm.openai_backend import OpenAIBackend

    return OpenAIBackend(config)


class LLMClient:
    def __init__(
        self, backend: Backend, config: LLMConfig, cache: ResponseCache | None = None
    ) -> None:
        self.backend = backend
        self.config = config
        self.cache = cache if backend.cacheable else None
        self.usage = UsageTracker()
        self._limits: Limits | None = None
        self._warned_price = False
        self._warned_cap = False
        self._progress_every_s = 10.0
        self._inflight: dict[str, asyncio.Future[LLMResponse]] = {}
        # the server is part of the cache key (in-process backends have none)
        self._endpoint = config.endpoint if config.backend == backend.name else None

    # -- public API -------------------------------------------------------------------------
    async def generate(self, request: LLMRequest) -> LLMResponse:
        """Answer one request (from the cache when possible). Never raises for backend faults.
        Identical requests in flight at the same time are sent once."""
        if self.cache is None:
            response = await self._generate_fresh(request)
            self.usage.add(response, request.tags)
            return response
        key = request.cache_key(self.backend.name, self.backend.model, self._endpoint)
        hit = self.cache.get(key, newer_than=self.config.refresh_before)
        if hit is not None and _invalid(request, hit) is not None:
            log.debug("cached answer %s fails its task's checks: asked again", key[:12])
            hit = None
        if hit is None and key in self._inflight:
            first = await asyncio.shield(self._inflight[key])
            hit = first.model_copy(deep=True) if first.ok else None
        if hit is not None:
            hit.cached = True
            self.usage.add(hit, request.tags)
            return hit
        future: asyncio.Future[LLMResponse] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            response = await self._generate_fresh(request)
            if response.ok:
                self.cache.put(key, response)
            future.set_result(response)
        finally:
            del self._inflight[key]
            if not future.done():
                future.cancel()
        self.usage.add(response, request.tags)
        return response

    async def generate_many(
        self,
        requests: Sequence[LLMRequest],
        on_result: Callable[[int, LLMResponse], Any] | None = None,
        desc: str = "llm",
    ) -> list[LLMResponse]:
        """Answer all requests concurrently (bounded by the config); results in input order.
        ``on_result(index, response)`` is called as each finishes (e.g. to write it out)."""
        n, done, errors = len(requests), 0, 0
        start = last = time.monotonic()

        async def one(i: int, req: LLMRequest) -> LLMResponse:
            nonlocal done, errors, last
            resp = await self.generate(req)
            done += 1
            errors += 0 if resp.ok else 1
            if on_result is not None:
                on_result(i, resp)
            now = time.monotonic()
            if now - last >= self._progress_every_s or done == n:
                last = now
                log.info(
                    "%s: %d/%d done (%d errors, %d cached) in %.1fs, $%.4f so far",
                    desc,
                    done,
                    n,
                    errors,
                    self.usage.total.cached,
                    now - start,
                    self.usage.total.cost_usd,
                )
            return resp

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self.cache is not None:
            self.cache.close()
        log.log(
            logging.DEBUG if getattr(self.backend, "dry", False) else logging.INFO,
            "llm usage (%s:%s): %s",
            self.backend.name,
            self.backend.model,
            self.usage.summary(),
        )

    async def __aenter__(self) -> LLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- internals --------------------------------------------------------------------------
    def _over_budget(self) -> LLMResponse | None:
        """An error response, not sent, once this client has spent ``llm.max_cost_usd`` (the
        guard behind the estimate: a stage never spends past the cap; rerun to continue)."""
        cap = self.config.max_cost_usd
        if cap is None or self.usage.total.cost_usd < cap:
            return None
        if not self._warned_cap:
            self._warned_cap = True
            log.warning("llm.max_cost_usd ($%.2f) spent: no further requests are sent", cap)
        return LLMResponse(
            error=f"not sent: llm.max_cost_usd (${cap:.2f}) spent; raise it and rerun",
            attempts=0,
            backend=self.backend.name,
            model=self.backend.model,
        )

    @property
    def limits(self) -> Limits:
        if self._limits is None:  # created lazily, inside the running event loop
            c = self.config
            self._limits = Limits(c.concurrency, c.requests_per_minute, c.tokens_per_minute)
        return self._limits

    async def _generate_fresh(self, request: LLMRequest) -> LLMResponse:
        """Attempts with transport retries, then bounded re-generation (``json_attempts``) for
        an answer that does not parse or fails its task's checks (``request.check``): one
        that stays bad is an error, never a cached success."""
        attempts = prompt_tokens = completion_tokens = 0
        latency = 0.0
        response = LLMResponse()
        for _ in range(self.config.json_attempts):
            response = await self._with_retries(request)
            attempts += response.attempts
            latency += response.latency_s
            prompt_tokens += response.prompt_tokens
            completion_tokens += response.completion_tokens
            if not response.ok:
                break
            if request.json_schema is not None and response.parsed is None:
                try:
                    response.parsed = parse_json(response.text, request.json_schema)
                except ValueError as e:
                    response.error = f"unparseable JSON output: {e}"
                    log.debug("unparseable JSON (%s); raw text kept: %.200r", e, response.text)
                    if response.finish_reason == "length":
                        response.error += " (answer cut at max_tokens)"
                        break
                    continue
            why = _invalid(request, response)
            if why is None:
                break
            response.error = f"invalid answer: {why}"
            log.debug("answer fails its task's checks (%s): %.200r", why, response.text)
            if request.prompt_logprobs is not None and request.json_schema is None:
                # the answer is the prompt's logprobs: the same prompt gives the same ones
                # (a full prefill each time; a real simulation lost 3x its time to this)
                break
            if response.finish_reason == "length" and request.prompt_logprobs is None:
                # cut at max_tokens: the same prompt is cut the same way again; the caller
                # may ask differently (explainers: a firmer instruction)
                response.error += " (answer cut at max_tokens)"
                break
        response.attempts = attempts
        response.prompt_tokens = prompt_tokens
        response.completion_tokens = completion_tokens
        response.latency_s = latency  # time in flight, not queueing for a slot or backoff
        response.backend = response.backend or self.backend.name
        response.model = response.model or self.backend.model
        response.cost_usd = self._cost(prompt_tokens, completion_tokens)
        if self.backend.baseline:
            response.metadata["baseline"] = True
        return response

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        if self.backend.local:
            return 0.0
        price = self.config.prices.get(self.backend.model)
        if price is not None and getattr(self.backend, "batched", False):
            price = price.batched()
        local_server = getattr(self.backend, "on_localhost", False)
        if price is None and not self._warned_price and not local_server:
            self._warned_price = True
            log.warning(
                "no price for model %s in llm.prices; its cost is counted as 0",
                self.backend.model,
            )
        return call_cost(price, prompt_tokens, completion_tokens)

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = getattr(exc, "retry_after", None)
        if after is not None:
            after = min(after, self.config.retry_after_max_s)
            self.limits.cool_down(after)
            return after
        c = self.config
        return wait_exponential_jitter(
            multiplier=c.backoff_initial_s, max=c.backoff_max_s, jitter=c.backoff_initial_s
        )(state)

    def _slot(self, tokens: int) -> contextlib.AbstractAsyncContextManager[None]:
        """A concurrency / rate slot; none for a batch backend (requests wait for their job
        there, and the provider's own limits apply to jobs, not requests)."""
        if not self.backend.limited:
            return contextlib.nullcontext()
        return self.limits.slot(tokens)

    async def _with_retries(self, request: LLMRequest) -> LLMResponse:
        tokens = request.approx_prompt_tokens() + request.sampling.max_tokens
        attempt, busy = 1, 0.0
        # Fast path: the first attempt runs without building a tenacity loop (most requests
        # succeed at once; the loop costs a noticeable share of CPU at hundreds per second).
        # A failed first attempt is replayed as attempt 1 of the loop, so waits, stop and
        # re-raising behave exactly as if the loop had run it.
        first_error: BaseException | None = None
        async with self._slot(tokens):
            held = self._over_budget()  # checked holding the slot: after earlier answers
            if held is not None:
                return held
            t0 = time.monotonic()
            try:
                response = await self.backend.complete(request)
            except Exception as e:
                first_error = e
            finally:
                busy += time.monotonic() - t0
        if first_error is None:
            response.attempts = attempt
            response.latency_s = busy
            return response
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.config.max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(RetryableError),
            reraise=True,
        )
        try:
            async for try_ in retrying:
                with try_:
                    attempt = try_.retry_state.attempt_number
                    if first_error is not None:
                        error, first_error = first_error, None
                        raise error
                    log.debug("retry %d of a %s request", attempt, self.backend.name)
                    async with self._slot(tokens):
                        t0 = time.monotonic()
                        try:
                            response = await self.backend.complete(request)
                        finally:
                            busy += time.monotonic() - t0
            response.attempts = attempt
            response.latency_s = busy
            return response
        except RetryableError as e:
            msg = f"gave up after {attempt} attempts: {e}"
        except FatalError as e:
            msg = f"failed: {e}"
        except Exception as e:  # a backend bug must not kill a batch of thousands
            log.exception("unexpected error in %s backend", self.backend.name)
            msg = f"unexpected {type(e).__name__}: {e}"
        redact = getattr(self.backend, "redact", None)
        if redact is not None:
            msg = redact(msg)
        log.warning("llm request failed: %s", msg)
        return LLMResponse(
            error=msg,
            attempts=attempt,
            latency_s=busy,
            backend=self.backend.name,
            model=self.backend.model,
        )


def _invalid(request: LLMRequest, response: LLMResponse) -> str | None:
    """Why ``response`` fails ``request.check`` (None: it passes, or there is no check)."""
    if request.check is None:
        return None
    try:
        return request.check(response)
    except Exception as e:  # a check that crashes rejects the answer; it never kills a batch
        return f"check raised {type(e).__name__}: {e}"


def create_client(
    config: LLMConfig, run_dir: str | Path | None = None, cache_shard: str | None = None
) -> LLMClient:
    """Client for ``config``; its cache lives in ``run_dir/<cache_file>`` when both are set
    (``cache_shard``: a worker process's own write file, see ``ResponseCache``)."""
    backend = make_backend(config, run_dir)
    cache = None
    if config.cache and run_dir is not None and backend.cacheable:
        cache = ResponseCache(Path(run_dir) / config.cache_file, shard=cache_shard)
    return LLMClient(backend, config, cache)


def run_requests(
    config: LLMConfig, requests: Sequence[LLMRequest], run_dir: str | Path | None = None
) -> list[LLMResponse]:
    """Synchronous convenience: answer ``requests`` with a fresh client and close it."""

    async def main() -> list[LLMResponse]:
        async with create_client(config, run_dir) as client:
            return await client.generate_many(requests)

    return asyncio.run(main())
