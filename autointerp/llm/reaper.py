"""A watcher that ends an in-process vLLM engine's processes when their parent dies.

vLLM starts its ``EngineCore`` (and that its ``Worker``) as separate, non-daemon processes and
has no parent-death handling for them: when the process that built the engine is killed
(SIGTERM, whose default action skips ``atexit``; SIGKILL; a crash), they keep running and
keep their memory. vLLM's own Worker does watch EngineCore (a "death pipe"), but nothing
watches the front end. :func:`start` runs this file as a small process of its own (stdlib and
psutil only: no autointerp or vLLM import) that polls its parent; once the parent is gone it
sends SIGTERM to the watched processes and their descendants and SIGKILL to any still alive
after a grace period. It exits by itself when the watched processes end first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

import psutil

log = logging.getLogger(__name__)

POLL_S = 0.2
GRACE_S = 2.0  # EngineCore asks to drain on SIGTERM; a dead parent will read nothing


def start(pids: Sequence[int]) -> subprocess.Popen[bytes] | None:
    """Watch ``pids`` (children of this process) until this process ends; None without pids."""
    if not pids:
        return None
    here = os.path.dirname(os.path.abspath(__file__))
    # isolated (-I): this folder, whose types.py would shadow the standard library's, is not
    # on the path; the parent's path is (psutil, wherever it was found)
    path = [p for p in sys.path if p and os.path.abspath(p) != here]
    boot = (
        f"import sys, runpy; sys.path[:0] = {path!r}; "
        f"runpy.run_path({__file__!r}, run_name='__main__')"
    )
    cmd = [sys.executable, "-I", "-c", boot, str(os.getpid()), *map(str, pids)]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, close_fds=True)
    log.debug("reaper %d watches vLLM processes %s", proc.pid, list(pids))
    return proc


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


def watch(parent: int, pids: Sequence[int]) -> None:
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))  # remembers its start time: no pid reuse
        except psutil.NoSuchProcess:
            continue
    while any(_running(p) for p in procs):
        if os.getppid() != parent:  # re-parented: the parent died, however it died
            reap(procs)
            return
        time.sleep(POLL_S)


if __name__ == "__main__":
    # a Ctrl-C or a group-wide SIGTERM reaches this process too: the parent's fate decides
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    watch(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
