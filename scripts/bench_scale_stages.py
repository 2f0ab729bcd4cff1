"""The cache and sample stages on Ray versus one process (not a timed test).

1. cache: ``--n-tokens`` tokens of the bundled demo model + SAE in chunks of
   ``--chunk-windows`` windows (the unit of resume; the default makes 8), as one process, then
   as Ray tasks with 2 workers (``execution.engine: ray``; a local 2-CPU Ray started before the
   clock), each in a fresh run directory; ``cache_ray2_speedup`` = one-process seconds / Ray
   seconds, and ``cache_identical``: every file of the two caches has the same bytes.
2. sample: every latent of a demo cache (``--sample-run-dir``; built with ``--sample-tokens``
   when missing) in one process (the stage's own 2 threads), with one latent only (what every
   shard-task would pay before its first latent: reading the stats and tokens, the token
   index, the neighbour windows), and as 2 Ray tasks that each build half of the latents into
   a run directory of their own: a lower bound on what sharding the stage over Ray would cost
   (the parts of the two would still have to be merged). ``sample_ray2_speedup`` = one-process
   seconds / Ray seconds.

Prints, as its LAST line, one JSON object (with the machine's load average).

    python scripts/bench_scale_stages.py --sample-run-dir results/bench_sample
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from autointerp.cache import cache_activations
from autointerp.config import load_config


def digests(run: Path) -> dict[str, str]:
    root = run / "cache"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def bench_cache(root: Path, n_tokens: int, chunk_windows: int) -> dict[str, Any]:
    def timed(name: str, **extra: Any) -> tuple[float, dict[str, float]]:
        base = {"cache.n_tokens": n_tokens, "cache.chunk_windows": chunk_windows}
        cfg = load_config(None, {"run_dir": str(root / name), **base, **extra})
        timings: dict[str, float] = {}
        t = time.perf_counter()
        cache_activations(cfg, progress=False, timings=timings)
        return time.perf_counter() - t, timings

    one, _ = timed("one")
    ray2, timings = timed("ray2", **{"execution.engine": "ray", "execution.workers": 2})
    return {
        "cache_tokens": n_tokens,
        "cache_chunks": timings["chunks_total"],
        "cache_1proc_s": round(one, 2),
        "cache_ray2_s": round(ray2, 2),
        "cache_ray2_forward_s": round(timings["forward_s"], 2),
        "cache_ray2_merge_s": round(timings["merge_s"], 2),
        "cache_ray2_speedup": round(one / ray2, 3),
        "cache_identical": digests(root / "one") == digests(root / "ray2"),
    }


def run_copy(src: Path, dst: Path) -> Path:
    """A run directory that shares ``src``'s cache (a link), with no examples yet."""
    dst.mkdir(parents=True)
    (dst / "cache").symlink_to((src / "cache").resolve())
    return dst


def sample_task(run: str, latents: list[int]) -> float:
    from autointerp.sampling.build import build_examples

    t = time.perf_counter()
    build_examples(Path(run), None, latents=latents, progress=False)
    return time.perf_counter() - t


def bench_sample(root: Path, src: Path, n_tokens: int) -> dict[str, Any]:
    import ray

    from autointerp.sampling.build import build_examples
    from autointerp.sampling.cachefiles import CacheFiles, find_hookpoints

    if not any(src.glob("cache/*/meta.json")):
        cfg = load_config(None, {"run_dir": str(src), "cache.n_tokens": n_tokens})
        cache_activations(cfg, progress=False)
    hp = find_hookpoints(src)[0]
    n_latents = CacheFiles(src / "cache" / hp.replace(":", "@")).n_latents

    def timed(name: str, latents: list[int] | None) -> float:
        t = time.perf_counter()
        build_examples(run_copy(src, root / name), None, latents=latents, progress=False)
        return time.perf_counter() - t

    one = timed("s_one", None)
    setup = timed("s_setup", [0])
    task = ray.remote(num_cpus=1)(sample_task)
    half = n_latents // 2
    runs = [run_copy(src, root / f"s_ray{i}") for i in range(2)]
    t = time.perf_counter()
    inside = ray.get(
        [
            task.remote(str(runs[0]), list(range(half))),
            task.remote(str(runs[1]), list(range(half, n_latents))),
        ]
    )
    ray2 = time.perf_counter() - t
    return {
        "sample_latents": n_latents,
        "sample_1proc_s": round(one, 2),
        "sample_one_latent_s": round(setup, 2),
        "sample_ray2_s": round(ray2, 2),
        "sample_ray2_task_s": [round(x, 2) for x in inside],
        "sample_ray2_speedup": round(one / ray2, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-tokens", type=int, default=32_768, help="tokens to cache")
    parser.add_argument(
        "--chunk-windows", type=int, default=64, help="windows per chunk (the unit of a task)"
    )
    parser.add_argument("--sample-run-dir", type=Path, default=Path("results/bench_sample"))
    parser.add_argument("--sample-tokens", type=int, default=1_048_576)
    parser.add_argument("--skip", default="", help="comma list of cache,sample")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import ray

    skip = set(args.skip.split(","))
    # Ray runs its workers at a lower priority than the driver by default (worker_niceness):
    # on a machine shared with other jobs that alone would starve them; same priority here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    out: dict[str, Any] = {"cpus": os.cpu_count()}
    root = Path(tempfile.mkdtemp(prefix="bench_scale_stages_"))
    try:
        if "cache" not in skip:
            out.update(bench_cache(root, args.n_tokens, args.chunk_windows))
        if "sample" not in skip:
            out.update(bench_sample(root, args.sample_run_dir, args.sample_tokens))
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    out["load_avg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
