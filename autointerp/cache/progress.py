"""A rich progress bar that counts tokens and shows tokens/s."""

from __future__ import annotations

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


class TokensPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} tok/s" if speed else "- tok/s", style="progress.data.speed")


class TokenBar:
    def __init__(self, progress: Progress | None, task: int | None) -> None:
        self._progress, self._task = progress, task

    def advance(self, n_tokens: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, n_tokens)


@contextmanager
def token_progress(description: str, total_tokens: int, enabled: bool = True) -> Iterator[TokenBar]:
    """Context manager yielding a bar whose ``advance`` takes a number of tokens."""
    if not enabled:
        yield TokenBar(None, None)
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
