"""A progress bar for LLM stages: latents done, requests/s, errors and cost so far."""

from __future__ import annotations

import time
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class StageProgress:
    """``update()`` after each latent; reads the client's usage totals for the stats."""

    def __init__(self, description: str, total: int, usage: Any, enabled: bool = True) -> None:
        self.usage = usage
        self.total = total
        self._start = time.monotonic()
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("latents {task.fields[stats]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task(description, total=total, stats="")

    def __enter__(self) -> StageProgress:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self.update(0)
            self._progress.stop()

    def stats(self) -> str:
        u = getattr(self.usage, "total", self.usage)  # a UsageTracker or its Usage totals
        if u is None:  # work done in other processes: latents only
            return ""
        rate = u.requests / max(time.monotonic() - self._start, 1e-9)
        return f"| {rate:,.1f} req/s | {u.errors} errors | {u.cached} cached | ${u.cost_usd:.4f}"

    def update(self, n: int = 1) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, stats=self.stats())
