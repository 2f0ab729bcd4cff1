"""The local engine of sharded execution: one spawned process per shard, on this machine.

A worker never outlives its parent: on Linux the kernel kills it when the parent dies
(``PR_SET_PDEATHSIG``), and everywhere a watchdog thread checks every 0.5 s that its parent is
still the one that started it and ends the process otherwise. So no orphan keeps sending
requests (and paying) after the parent was killed, and none writes part files beside a rerun.
Workers log through the usual handler, with time, level and worker index on every line."""

from __future__ import annotations

import contextlib
import importlib
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
WATCHDOG_S = 0.5
PR_SET_PDEATHSIG = 1
LOG_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class ShardFailedError(RuntimeError):
    """A worker (process or Ray task) failed; what every worker wrote stays for the rerun."""


def resolve(fn: str) -> Any:
    """``"package.module:function"`` -> the function."""
    module, _, name = fn.partition(":")
    return getattr(importlib.import_module(module), name)


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` ends (call first thing in a worker)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before the line above ran
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_S)
            if os.getppid() != parent_pid:
                os._exit(1)  # answers are committed one by one; nothing half-written matters

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _entry(
    fn: str,
    run_dir: str,
    config: dict[str, Any],
    payload: Any,
    messages: Any,
    index: int,
    parent_pid: int,
    log_level: int,
) -> None:
    die_with_parent(parent_pid)
    logging.basicConfig(level=log_level, format=LOG_FORMAT, datefmt="%H:%M:%S", force=True)
    from autointerp.config import RunConfig

    try:
        cfg = RunConfig.model_validate(config)
        shard = f"w{index}-{os.getpid()}"
        n = resolve(fn)(Path(run_dir), cfg, payload, lambda: messages.put(("latent", 1)), shard)
        messages.put(("done", n))
    except BaseException as e:
        messages.put(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))
        raise


THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "POLARS_MAX_THREADS")


@contextlib.contextmanager
def worker_threads(n_procs: int) -> Iterator[None]:
    """While workers are spawned: their thread pools (BLAS, OpenMP/torch, polars) sized to
    this machine's cores shared out among them, unless the user set a size. Each library would
    otherwise start one thread per core in every worker, and on a small machine the workers'
    spinning pools starve each other (the demo's scoring took ~2x longer)."""
    per = str(max(1, (os.cpu_count() or 1) // max(1, n_procs)))
    added = [v for v in THREAD_VARS if v not in os.environ]
    for v in added:
        os.environ[v] = per  # a spawned child copies the environment when it starts
    try:
        yield
    finally:
        for v in added:
            os.environ.pop(v, None)


def run_processes(
    run_dir: Path, config: dict[str, Any], fn: str, payloads: list[Any], on_latent: Any
) -> None:
    """Run ``fn(run_dir, config, payload, on_latent, cache_shard)`` for each payload, each in
    its own process; returns when all succeeded, raises when one failed (the others are
    stopped; what every worker wrote stays for the rerun)."""
    ctx = multiprocessing.get_context("spawn")  # no fork of a process holding threads
    messages = ctx.Queue()
    level = logging.getLogger().getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_entry,
            args=(fn, str(run_dir), config, p, messages, i, os.getpid(), level),
            name=f"worker-{i}",
            daemon=True,
        )
        for i, p in enumerate(payloads)
    ]
    log.info("working in %d processes", len(procs))
    errors: list[str] = []
    clean = False
    try:
        with worker_threads(len(procs)):
            for p in procs:
                p.start()
        finished = 0
        while finished < len(procs) and not errors:
            try:
                kind, value = messages.get(timeout=0.2)
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead and not errors:
                    time.sleep(0.5)  # its error message may still be in the pipe
                    while not messages.empty():
                        kind, value = messages.get()
                        errors += [value] if kind == "error" else []
                    errors = errors or [f"{dead[0].name} died (exit code {dead[0].exitcode})"]
                continue
            if kind == "latent":
                on_latent()
            elif kind == "done":
                finished += 1
            else:
                errors.append(value)
        clean = not errors
    finally:
        for p in procs:
            if p.is_alive() and not clean:
                p.terminate()
        for p in procs:
            p.join()
    if errors:
        log.error("worker failed: %s", errors[0])
        first = errors[0].splitlines()[0]
        raise ShardFailedError(f"a worker failed (rerun to resume): {first}")
