"""Admission control: bounded concurrency, requests/tokens-per-minute buckets, and a shared
cool-down after a server says ``Retry-After`` (so one 429 slows every request, not just one)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiolimiter import AsyncLimiter


def _bucket(per_minute: float, burst_s: float) -> AsyncLimiter:
    """A bucket refilling at ``per_minute / 60`` per second that holds ``burst_s`` seconds'
    worth (at least one unit)."""
    per_second = per_minute / 60.0
    capacity = max(1.0, per_second * burst_s)
    return AsyncLimiter(capacity, capacity / per_second)


class Limits:
    def __init__(
        self,
        concurrency: int,
        requests_per_minute: float | None = None,
        tokens_per_minute: float | None = None,
    ) -> None:
        self._sem = asyncio.Semaphore(concurrency)
        # Buckets hold a few seconds' worth, not a minute's: no burst of a full minute's quota.
        self._rpm = _bucket(requests_per_minute, 1.0) if requests_per_minute else None
        self._tpm = _bucket(tokens_per_minute, 10.0) if tokens_per_minute else None
        self._resume_at = 0.0

    def cool_down(self, seconds: float) -> None:
        """Hold back new attempts for ``seconds`` (from a server's Retry-After)."""
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)

    async def _wait_cool_down(self) -> None:
        while (delay := self._resume_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    @asynccontextmanager
    async def slot(self, tokens: int = 0) -> AsyncIterator[None]:
        """Wait for a concurrency slot and rate budget; hold the slot for the attempt."""
        await self._wait_cool_down()
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None and tokens > 0:
            await self._tpm.acquire(min(float(tokens), self._tpm.max_rate))
        async with self._sem:
            yield
