"""A rich progress bar that counts tokens and shows tokens/s; without it (``--no-progress``, a
batch job writing to a file), a log line every ``LOG_EVERY_S`` seconds says as much."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0


class TokensPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} tok/s" if speed else "- tok/s", style="progress.data.speed")


class TokenBar:
    def __init__(
        self, progress: Progress | None, task: int | None, total: int = 0, label: str = ""
    ) -> None:
        self._progress, self._task = progress, task
        self._total, self._label = total, label
        self._done = self._logged = 0
        self._last = time.monotonic()

    def advance(self, n_tokens: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n_tokens)
            return
        self._done += n_tokens
        now = time.monotonic()
        if now - self._last < LOG_EVERY_S or not self._total:
            return
        # the speed since the last line (from the second line on, chunks that a resumed run
        # skipped at its start do not count in it)
        speed = (self._done - self._logged) / max(now - self._last, 1e-9)
        self._last, self._logged = now, self._done
        left = (self._total - self._done) / speed if speed else float("inf")
        log.info(
            "%s: %s of %s tokens (%.0f %%), %s tok/s, ~%s left",
            self._label,
            f"{self._done:,}",
            f"{self._total:,}",
            100 * self._done / self._total,
            f"{speed:,.0f}",
            _duration(left),
        )


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@contextmanager
def token_progress(description: str, total_tokens: int, enabled: bool = True) -> Iterator[TokenBar]:
    """Context manager yielding a bar whose ``advance`` takes a number of tokens (disabled: it
    logs the tokens done, the speed and the time left every ``LOG_EVERY_S`` seconds)."""
    if not enabled:
        yield TokenBar(None, None, total_tokens, description)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("tokens"),
        TokensPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total_tokens)
        yield TokenBar(progress, task)
