"""The provider's Batch API (OpenAI ``/v1/files`` + ``/v1/batches``) behind the same
``complete(request)`` as a live backend, so explainers and scorers do not change.

``complete`` queues the request and waits. When no new request has come for
``llm.batch.flush_idle_s`` (or a job's worth has), the queue is written as JSONL, cut into
jobs within the per-file limits, and each job is submitted when the run's enqueued prompt
tokens leave room for it. One task polls the jobs; an ended job's output is saved next to the
manifest, then every waiting request gets its line, parsed by the live backend's parser. The
client above caches each answer as for a live request, so a rerun pays for nothing twice.
A request whose line is missing (job expired or cancelled) or failed with a transient status
raises :class:`RetryableError`: the client's retry submits it again in a later job.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path
from typing import Any

from autointerp.llm.base import Backend, FatalError, RetryableError
from autointerp.llm.batch.jobs import Chunk, JobStore, request_line
from autointerp.llm.config import LLMConfig
from autointerp.llm.openai_backend import RETRY_STATUS, OpenAIBackend, _malformed_to_value_error
from autointerp.llm.types import LLMRequest, LLMResponse

log = logging.getLogger(__name__)
ENDED = ("completed", "failed", "expired", "cancelled")


class BatchBackend(Backend):
    local = False
    batched = True  # batch prices
    limited = False  # no concurrency slot held while a request waits for its job

    def __init__(self, config: LLMConfig, run_dir: str | Path | None) -> None:
        self._live = OpenAIBackend(config)
        self.name, self.model = self._live.name, self._live.model
        self._endpoint = config.endpoint  # in the cache key, as the client's
        self.on_localhost = self._live.on_localhost
        self.cfg = config.batch
        self.store = JobStore(Path(run_dir or ".") / "batches")
        self._queue: dict[str, tuple[LLMRequest, int]] = {}  # custom_id -> request, tokens
        self._waiting: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._submitted: dict[str, str] = {}  # custom_id -> chunk, of jobs not yet ended
        self._ready: dict[str, dict[str, Any]] = {}  # ended jobs' lines nobody asked for yet
        self._flush_handle: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._room = asyncio.Condition()
        self._started: asyncio.Future[None] | None = None
        self.submitted_requests = 0  # requests this process put into new jobs

    def redact(self, text: str) -> str:
        return self._live.redact(text)

    # -- resume -----------------------------------------------------------------------------
    async def _start(self) -> None:
        """Read the manifest once, before any request is queued (every caller waits)."""
        if self._started is None:
            self._started = asyncio.ensure_future(self._resume())
        await asyncio.shield(self._started)

    async def _resume(self) -> None:
        for c in list(self.store.chunks.values()):
            if c.state == "writing":
                found = await self._find_job(c.chunk)
                if found is None:
                    continue  # never submitted: its requests are queued again when asked
                c.batch_id, c.state = found, "submitted"
                self.store.save(c)
            if c.state == "submitted":
                for cid in c.custom_ids:
                    self._submitted[cid] = c.chunk
                log.info("resuming batch job %s (%d requests)", c.batch_id, len(c.custom_ids))
            elif c.state == "ended":
                self._ready.update(self.store.read_output(c.chunk))
        if self._submitted:
            self._ensure_poller()

    async def _find_job(self, chunk: str) -> str | None:
        """The job created for ``chunk`` by a process killed before it recorded the id."""
        try:
            async for job in self._live._client.batches.list(limit=100):
                if (job.metadata or {}).get("autointerp_chunk") == chunk:
                    return str(job.id)
        except Exception as e:  # a provider without the list endpoint: submit again
            log.warning("cannot list batch jobs (%s): chunk %s is submitted again", e, chunk)
        return None

    # -- requests ---------------------------------------------------------------------------
    async def complete(self, request: LLMRequest) -> LLMResponse:
        if request.messages is None or request.prompt_logprobs is not None:
            raise FatalError(
                "the Batch API takes chat requests without prompt logprobs: set "
                "llm.batch.enabled false for this scorer (or use a vLLM server)"
            )
        await self._start()
        cid = request.cache_key(self.name, self.model, self._endpoint)
        line = self._ready.pop(cid, None)
        if line is None:
            fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            self._waiting.setdefault(cid, []).append(fut)
            if cid not in self._submitted and cid not in self._queue:
                self._queue[cid] = (request, request.approx_prompt_tokens())
                self._schedule_flush()
            line = await fut
        return self._response(line, request)

    def _response(self, line: dict[str, Any], request: LLMRequest) -> LLMResponse:
        if line.get("missing"):
            raise RetryableError(f"batch job {line['missing']}: no answer for this request")
        resp = line.get("response") or {}
        status = int(resp.get("status_code") or 0)
        if status == 200:
            body = resp.get("body") or {}
            try:
                return _malformed_to_value_error(self._live._parse_chat, body, request)
            except ValueError as e:
                raise RetryableError(f"malformed batch answer: {e}") from e
        err = line.get("error") or (resp.get("body") or {}).get("error") or {}
        msg = self.redact(f"batch item {status or ''} {err.get('code', '')}: {err.get('message')}")
        if status in RETRY_STATUS or status >= 500 or status == 0:
            raise RetryableError(msg)
        raise FatalError(msg)

    def _deliver(self, cid: str, line: dict[str, Any]) -> None:
        futures = self._waiting.pop(cid, [])
        if not futures:
            if not line.get("missing"):
                self._ready[cid] = line
            return
        for f in futures:
            if not f.done():
                f.set_result(line)

    # -- submission -------------------------------------------------------------------------
    def _schedule_flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if len(self._queue) >= self.cfg.max_requests_per_job:
            self._spawn(self._flush())
            return
        self._flush_handle = loop.call_later(
            self.cfg.flush_idle_s, lambda: self._spawn(self._flush())
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _chunks(self, items: list[tuple[str, LLMRequest, int]]) -> list[list[Any]]:
        """Cut into jobs within the requests, bytes and enqueued-token limits."""
        out: list[list[Any]] = [[]]
        size = tokens = 0
        cap = self.cfg.max_enqueued_tokens
        for cid, req, tok in items:
            line = request_line(cid, self.model, req)
            n = len(str(line)) + 1
            cur = out[-1]
            if cur and (
                len(cur) >= self.cfg.max_requests_per_job
                or size + n > self.cfg.max_job_bytes
                or (cap is not None and tokens + tok > cap)
            ):
                out.append([])
                cur, size, tokens = out[-1], 0, 0
            cur.append((cid, line, tok))
            size += n
            tokens += tok
        return [c for c in out if c]

    def _enqueued(self) -> int:
        active = {self._submitted[cid] for cid in self._submitted}
        return sum(self.store.chunks[c].tokens for c in active)

    async def _flush(self) -> None:
        self._flush_handle = None
        items = [(cid, req, tok) for cid, (req, tok) in self._queue.items()]
        self._queue.clear()
        if not items:
            return
        for chunk in self._chunks(items):
            try:
                await self._submit(chunk)
            except Exception as e:  # upload or create failed: these requests fail (retried)
                log.warning("batch submission failed: %s", self.redact(str(e)))
                for cid, _, _ in chunk:
                    self._deliver(cid, {"missing": f"submission failed ({type(e).__name__})"})

    async def _submit(self, chunk: list[tuple[str, dict[str, Any], int]]) -> None:
        tokens = sum(t for _, _, t in chunk)
        cap = self.cfg.max_enqueued_tokens
        async with self._room:  # wait until the provider's queue has room for this job
            await self._room.wait_for(
                lambda: cap is None or not self._submitted or self._enqueued() + tokens <= cap
            )
            name = f"c{uuid.uuid4().hex[:12]}"
            record = Chunk(
                chunk=name, state="writing", custom_ids=[c for c, _, _ in chunk], tokens=tokens
            )
            path = self.store.write_input(name, [line for _, line, _ in chunk])
            self.store.save(record)
            client = self._live._client
            with path.open("rb") as f:
                uploaded = await client.files.create(file=f, purpose="batch")
            job = await client.batches.create(
                input_file_id=uploaded.id,
                endpoint="/v1/chat/completions",
                completion_window=self.cfg.completion_window,  # type: ignore[arg-type]
                metadata={"autointerp_chunk": name},
            )
            record.batch_id, record.input_file_id = str(job.id), str(uploaded.id)
            record.state = "submitted"
            self.store.save(record)
            for cid in record.custom_ids:
                self._submitted[cid] = name
            self.submitted_requests += len(chunk)
        log.info(
            "submitted batch job %s: %d requests, ~%d prompt tokens", job.id, len(chunk), tokens
        )
        self._ensure_poller()

    # -- polling ----------------------------------------------------------------------------
    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.ensure_future(self._poll())

    async def _poll(self) -> None:
        client = self._live._client
        while self._submitted:
            await asyncio.sleep(self.cfg.poll_interval_s)
            for name in sorted({self._submitted[c] for c in self._submitted}):
                record = self.store.chunks[name]
                try:
                    job = await client.batches.retrieve(record.batch_id or "")
                except Exception as e:  # a transient failure: poll again next round
                    log.warning("polling batch %s: %s", record.batch_id, self.redact(str(e)))
                    continue
                if job.status in ENDED:
                    await self._ended(record, job)

    async def _download(self, file_id: str | None) -> str:
        if not file_id:
            return ""
        content = await self._live._client.files.content(file_id)
        return content.text

    async def _ended(self, record: Chunk, job: Any) -> None:
        text = await self._download(job.output_file_id)
        errors = await self._download(getattr(job, "error_file_id", None))
        path = self.store.output_path(record.chunk)
        path.write_text(text + ("\n" if text and not text.endswith("\n") else "") + errors)
        record.state, record.status = "ended", str(job.status)
        if job.status == "failed":
            errs = getattr(job, "errors", None)
            record.error = self.redact(str(getattr(errs, "data", errs)))[:500]
        self.store.save(record)
        lines = self.store.read_output(record.chunk)
        log.info(
            "batch job %s %s: %d of %d answered",
            job.id,
            job.status,
            len(lines),
            len(record.custom_ids),
        )
        for cid in record.custom_ids:
            self._submitted.pop(cid, None)
            line = lines.get(cid)
            if line is None and job.status == "failed":
                line = {
                    "response": {"status_code": 400},
                    "error": {"code": "batch_failed", "message": record.error},
                }
            self._deliver(cid, line or {"missing": f"{job.id} {job.status}"})
        async with self._room:
            self._room.notify_all()

    async def aclose(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for task in [*self._tasks, *([self._poller] if self._poller else [])]:
            task.cancel()
        await self._live.aclose()
