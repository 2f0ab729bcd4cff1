"""The reaper ends a dead parent's engine processes (and theirs), however the parent died,
and leaves them alone while the parent lives; killed while the engine loads (before the
reaper is told its processes), it ends what appeared under the parent meanwhile. A stand-in
process tree replaces vLLM's EngineCore and Worker (tests/llm/test_real_llm.py does it with
the real engine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]
# a parent that starts a reaper and an "engine", which starts a "worker"; with "named" it
# then names the engine to the reaper (after a load), with "loading" it never does (killed
# while loading); it prints the pids of the engine, the worker and the reaper, and waits
PARENT = """
import subprocess, sys, time
import psutil
from autointerp.llm import reaper
watcher = reaper.Reaper()
worker = "import time; time.sleep(120)"
engine = subprocess.Popen([sys.executable, "-c",
    f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {worker!r}]); "
    "time.sleep(120)"])
while not psutil.Process(engine.pid).children():
    time.sleep(0.05)
if sys.argv[1] == "named":
    watcher.watch([engine.pid])
print(engine.pid, psutil.Process(engine.pid).children()[0].pid, watcher.proc.pid, flush=True)
time.sleep(120)
"""


def _gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _start(mode: str = "named") -> tuple[subprocess.Popen[str], list[psutil.Process]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True, env=env
    )
    assert parent.stdout is not None
    pids = [int(x) for x in parent.stdout.readline().split()]
    return parent, [psutil.Process(p) for p in pids]


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_gone(p) for p in procs):
        time.sleep(0.1)
    return [p for p in procs if not _gone(p)]


@pytest.mark.parametrize(
    ("sig", "mode"),
    [(signal.SIGKILL, "named"), (signal.SIGTERM, "named"), (signal.SIGKILL, "loading")],
)
def test_engine_tree_dies_with_its_parent(sig: signal.Signals, mode: str) -> None:
    parent, procs = _start(mode)
    try:
        time.sleep(1.0)  # several polls while the parent lives: nothing is touched
        assert not any(_gone(p) for p in procs)
        parent.send_signal(sig)
        parent.wait()
        # the reaper's poll (0.2 s), then SIGTERM to the engine and the worker (they obey)
        assert _wait_gone(procs, 10.0) == []
    finally:
        for p in procs:
            if not _gone(p):
                p.kill()
        parent.kill()


def test_reaper_leaves_when_the_engine_ends_first() -> None:
    parent, (engine, worker, watcher) = _start()
    try:
        worker.kill()
        engine.kill()  # a normal shutdown ends the engine first: nothing left to watch
        assert _wait_gone([watcher], 10.0) == []
        assert parent.poll() is None  # and the parent goes on
    finally:
        parent.kill()
        parent.wait()
