"""One process at a time on a run directory: ``RUN_DIR/.autointerp.lock`` is held (``flock``)
by the process running a stage; a second process gets a one-line error naming the first,
instead of interleaving part files with it. Re-entrant within a process (``run`` calls
explain then score). The kernel frees the lock when its holder dies, even by ``kill -9``."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no lock (documented)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".autointerp.lock"
_held: dict[Path, tuple[int, int]] = {}  # resolved run dir -> (fd, depth)
_mutex = threading.Lock()


class RunDirBusyError(RuntimeError):
    """Another process is working on the run directory."""


def _holder(path: Path) -> str:
    with contextlib.suppress(OSError):
        text = path.read_text().strip()
        if text:
            return text
    return "another process"


@contextlib.contextmanager
def run_lock(run_dir: str | Path, stage: str) -> Iterator[None]:
    """Hold the run directory's lock for ``stage``; raises :class:`RunDirBusyError` at once
    when another process holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    key = run_dir.resolve()
    with _mutex:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            acquired = False
        else:
            acquired = True
    if acquired:
        path = key / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise RunDirBusyError(
                    f"{run_dir} is in use by {_holder(path)}: wait for it to end (or stop it), "
                    "or give this run another --run-dir"
                ) from None
        os.ftruncate(fd, 0)
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} ({stage}, {started})".encode())
        with _mutex:
            _held[key] = (fd, 1)
    try:
        yield
    finally:
        with _mutex:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                os.close(fd)  # releases the flock
