"""The one loop every LLM stage runs: items (latents, or latent x explanation pairs) are
pulled lazily from an iterator and worked on concurrently, at most ``limit`` at once; each
result is handed to ``on_done`` as soon as it is ready. The LLM client bounds the requests;
this bounds the items, so memory does not grow with the number of latents."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


async def stream(
    items: Iterator[T],
    work: Callable[[T], Awaitable[R]],
    on_done: Callable[[T, R], None],
    limit: int,
) -> int:
    """Run ``work`` over ``items`` with at most ``limit`` in flight; returns the count done.
    An exception in ``work`` propagates (workers turn expected failures into error rows)."""
    pending: dict[asyncio.Task[R], T] = {}
    done_count = 0
    exhausted = False

    def refill() -> None:
        nonlocal exhausted
        while not exhausted and len(pending) < limit:
            try:
                item = next(items)
            except StopIteration:
                exhausted = True
                return
            pending[asyncio.ensure_future(work(item))] = item

    refill()
    try:
        while pending:
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                item = pending.pop(task)
                on_done(item, task.result())
                done_count += 1
            refill()
    finally:
        for task in pending:
            task.cancel()
    return done_count
