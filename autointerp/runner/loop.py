"""Run a stage's coroutine on uvloop when it is installed (the ``fast`` extra): the LLM
client's event loop is CPU-bound at hundreds of requests per second."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)
