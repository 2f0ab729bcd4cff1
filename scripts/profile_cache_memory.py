"""Memory profile of one cache run, per phase (prepare, forward, merge).

Samples the process's RSS and pyarrow's allocated bytes every 20 ms, and records tracemalloc's
peak (numpy and Python allocations; torch's own allocations are not traced) in each phase.
Prints one JSON object. Compare two token counts to see what grows with them:

    python scripts/profile_cache_memory.py --n-tokens 262144 --ctx-len 256 --batch-size 32
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

import autointerp.cache.run as run_module
from autointerp.cache import cache_activations
from autointerp.config import load_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-tokens", type=int, default=262_144)
    p.add_argument("--ctx-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dataset", default="stdlib")
    p.add_argument("--no-tracemalloc", action="store_true", help="RSS and arrow pool only")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO)
    run_dir = Path(tempfile.mkdtemp(prefix="profile_cache_"))
    cfg = load_config(
        None,
        {
            "run_dir": str(run_dir),
            "cache.n_tokens": args.n_tokens,
            "cache.ctx_len": args.ctx_len,
            "cache.batch_size": args.batch_size,
            "dataset.source": args.dataset,
            "subject.device": "cpu",
        },
    )
    proc = psutil.Process()
    phase = ["prepare"]
    peaks: dict[str, dict[str, int]] = {}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss, arrow = proc.memory_info().rss >> 20, pa.total_allocated_bytes() >> 20
            peak = peaks.setdefault(phase[0], {"rss_mb": 0, "arrow_mb": 0})
            peak["rss_mb"] = max(peak["rss_mb"], rss)
            peak["arrow_mb"] = max(peak["arrow_mb"], arrow)
            time.sleep(0.02)

    def in_phase(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def inner(*a: Any, **k: Any) -> Any:
            phase[0] = name
            if tracemalloc.is_tracing():
                tracemalloc.reset_peak()
            try:
                return fn(*a, **k)
            finally:
                if tracemalloc.is_tracing():
                    traced = tracemalloc.get_traced_memory()[1] >> 20
                    peaks.setdefault(name, {})["traced_peak_mb"] = traced

        return inner

    run_module._forward = in_phase("forward", run_module._forward)  # type: ignore[assignment]
    run_module._merge = in_phase("merge", run_module._merge)  # type: ignore[assignment]
    if not args.no_tracemalloc:
        tracemalloc.start()
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    timings: dict[str, float] = {}
    try:
        cache_activations(cfg, progress=False, timings=timings)
    finally:
        stop.set()
        thread.join()
        shutil.rmtree(run_dir, ignore_errors=True)
    out = {"n_tokens": args.n_tokens, "ctx_len": args.ctx_len, **peaks}
    out["timings"] = {k: round(v, 1) for k, v in timings.items()}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
