"""A watcher that ends an in-process vLLM engine's processes when their parent dies.

vLLM starts its ``EngineCore`` (and that its ``Worker``) as separate, non-daemon processes and
has no parent-death handling for them: when the process that built the engine is killed
(SIGTERM, whose default action skips ``atexit``; SIGKILL; a crash), they keep running and
keep their memory. vLLM's own Worker does watch EngineCore (a "death pipe"), but nothing
watches the front end. :class:`Reaper` runs this file as a small process of its own (stdlib
and psutil only: no autointerp or vLLM import) that polls its parent; once the parent is gone
it sends SIGTERM to the watched processes and their descendants and SIGKILL to any still alive
after a grace period. It is started before the engine loads (a kill during the minutes of a
load is covered: it watches what appears under the parent until it is told the engine's
processes) and exits by itself when the watched processes end first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

import psutil

log = logging.getLogger(__name__)

POLL_S = 0.2
GRACE_S = 2.0  # EngineCore asks to drain on SIGTERM; a dead parent will read nothing


class Reaper:
    """The watcher of one engine's processes, started BEFORE the engine is built: until
    :meth:`watch` names the engine's processes, it watches every process that appears under
    this one meanwhile (a parent killed while the engine loads leaves no orphan either)."""

    def __init__(self) -> None:
        me = psutil.Process()
        existing = [c.pid for c in me.children(recursive=True)]
        here = os.path.dirname(os.path.abspath(__file__))
        # isolated (-I): this folder, whose types.py would shadow the standard library's, is
        # not on the path; the parent's path is (psutil, wherever it was found)
        path = [p for p in sys.path if p and os.path.abspath(p) != here]
        boot = (
            f"import sys, runpy; sys.path[:0] = {path!r}; "
            f"runpy.run_path({__file__!r}, run_name='__main__')"
        )
        cmd = [sys.executable, "-I", "-c", boot, str(os.getpid()), ",".join(map(str, existing))]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, close_fds=True)

    def watch(self, pids: Sequence[int]) -> None:
        """From now on watch exactly ``pids`` (and their descendants); it exits once they end."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((" ".join(map(str, pids)) + "\n").encode())
            self.proc.stdin.flush()
        except OSError:  # it died: nothing left to tell
            log.warning("the vLLM reaper %d is gone", self.proc.pid)
        log.debug("reaper %d watches vLLM processes %s", self.proc.pid, list(pids))

    def stop(self) -> None:
        """The engine was shut down: the watcher has nothing left to do."""
        self.proc.kill()
        self.proc.wait()
        if self.proc.stdin is not None:
            self.proc.stdin.close()


def start(pids: Sequence[int]) -> Reaper:
    """A reaper watching ``pids`` (children of this process) until this process ends."""
    reaper = Reaper()
    reaper.watch(pids)
    return reaper


def reap(procs: Sequence[psutil.Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM ``procs`` and their descendants, then SIGKILL whatever outlives ``grace_s``."""
    victims: dict[int, psutil.Process] = {}
    for p in procs:
        try:
            if p.is_running():
                victims[p.pid] = p
                victims.update((c.pid, c) for c in p.children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    for p in victims.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.terminate()
    _, alive = psutil.wait_procs(list(victims.values()), timeout=grace_s)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=grace_s)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _is_tracker(p: psutil.Process) -> bool:
    """multiprocessing's resource tracker: it ends by itself, after cleaning up."""
    try:
        return "resource_tracker" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def watch(parent: int, existing: set[int]) -> None:
    """Poll ``parent``; reap when it is gone. Until stdin names the processes to watch, watch
    those that appear under the parent (not ``existing``, not this one)."""
    named: list[psutil.Process] | None = None
    seen: dict[int, psutil.Process] = {}

    def read_names() -> None:
        nonlocal named
        for line in sys.stdin:
            procs = []
            for pid in line.split():
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs.append(psutil.Process(int(pid)))  # its start time: no pid reuse
            named = procs
        # EOF: the parent closed the pipe or died; its death is told by the poll below

    threading.Thread(target=read_names, daemon=True).start()
    me = os.getpid()
    try:
        root = psutil.Process(parent)
    except psutil.NoSuchProcess:
        return
    while True:
        if os.getppid() != parent:  # re-parented: the parent died, however it died
            reap(named if named is not None else list(seen.values()))
            return
        if named is not None:
            if not any(_running(p) for p in named):
                return  # the engine ended first (shut down normally)
        else:
            with contextlib.suppress(psutil.Error):
                for c in root.children(recursive=True):
                    new = c.pid != me and c.pid not in existing and c.pid not in seen
                    if new and not _is_tracker(c):
                        seen[c.pid] = c
        time.sleep(POLL_S)


if __name__ == "__main__":
    # a Ctrl-C or a group-wide SIGTERM reaches this process too: the parent's fate decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch(int(sys.argv[1]), {int(a) for a in sys.argv[2].split(",") if a})
