"""Benchmark of the cache stage on the bundled demo model + SAE (not a timed test).

Runs, each in a fresh subprocess (so peak RSS is that run's own):
  limit  the bare forward (stopped at the deepest hookpoint) + SAE encode_sparse over N tokens,
         windows tokenized beforehand, nothing written: the speed limit of caching;
  small  the full cache of N tokens (cache_activations, fresh run directory);
  large  the same with 4N tokens.
The LAST line printed is one JSON object with tokens_per_s_forward_encode, tokens_per_s_cache,
overhead_ratio (cache / limit), peak_rss_mb_small, peak_rss_mb_large and context.

    python scripts/bench_cache.py [--n-tokens 262144] [--model DIR] [--sae DIR] [--device auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autointerp.config import DEMO_CODER, DEMO_HOOKPOINT, DEMO_MODEL, RunConfig, load_config


def make_config(args: argparse.Namespace, run_dir: Path, n_tokens: int) -> RunConfig:
    return load_config(
        None,
        {
            "run_dir": str(run_dir),
            "subject.model": args.model,
            "subject.device": args.device,
            "coder.path": args.sae,
            "cache.hookpoints": [args.hookpoint],
            "cache.n_tokens": n_tokens,
            "cache.ctx_len": args.ctx_len,
            "cache.batch_size": args.batch_size,
        },
    )


def child_limit(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from autointerp.cache.encode import SparseEncoder
    from autointerp.cache.prepare import prepare

    cfg = make_config(args, Path(args.run_dir), args.n_tokens)
    prep = prepare(cfg)
    windows = np.stack(list(prep.windows))
    bs = cfg.cache.batch_size
    jobs = prep.jobs
    coders = {j.hookpoint.spec: j.coder for j in jobs}
    with SparseEncoder(
        prep.model, [j.hookpoint for j in jobs], coders, prep.device, prep.skip_first
    ) as enc:
        enc.encode(windows[:bs])  # warm-up
        t0 = time.perf_counter()
        nnz = 0
        for b in range(0, len(windows), bs):
            nnz += sum(len(n) for n in enc.encode(windows[b : b + bs]).values())
        _sync(prep.device)
        limit_s = time.perf_counter() - t0
    n_full = min(len(windows), max(bs, len(windows) // 4))  # full forward, for context
    with torch.inference_mode():
        t0 = time.perf_counter()
        for b in range(0, n_full, bs):
            ids = torch.from_numpy(windows[b : b + bs]).to(prep.device, torch.long)
            prep.model(input_ids=ids, use_cache=False)
        _sync(prep.device)
        full_s = time.perf_counter() - t0
    n_tok = windows.size
    return {
        "tokens": int(n_tok),
        "tokens_per_s_forward_encode": n_tok / limit_s,
        "tokens_per_s_full_forward": n_full * windows.shape[1] / full_s,
        "mean_l0": nnz / n_tok,
        "device": str(prep.device),
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def child_cache(args: argparse.Namespace) -> dict[str, Any]:
    from autointerp.cache import ActivationCache, cache_activations

    cfg = make_config(args, Path(args.run_dir), args.n_tokens)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    cache_activations(cfg, progress=False, save=True, timings=timings)
    total = time.perf_counter() - t0
    meta = ActivationCache(cfg.run_dir, args.hookpoint).meta
    work = timings["forward_s"] + timings["merge_s"]
    return {
        "tokens": meta["n_tokens"],
        "tokens_per_s_cache": meta["n_tokens"] / work,
        "tokens_per_s_cache_incl_startup": meta["n_tokens"] / total,
        "n_shards": len(meta["shards"]),
        **{k: round(v, 3) for k, v in timings.items()},
    }


def run_child(args: argparse.Namespace, mode: str, n_tokens: int, run_dir: Path) -> dict:
    """Run one mode in a fresh process; returns its JSON plus its own peak RSS (wait4)."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--n-tokens",
        str(n_tokens),
        "--run-dir",
        str(run_dir),
        "--model",
        args.model,
        "--sae",
        args.sae,
        "--hookpoint",
        args.hookpoint,
        "--device",
        args.device,
        "--ctx-len",
        str(args.ctx_len),
        "--batch-size",
        str(args.batch_size),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-tokens", type=int, default=262_144)
    p.add_argument("--model", default=DEMO_MODEL)
    p.add_argument("--sae", default=DEMO_CODER)
    p.add_argument("--hookpoint", default=DEMO_HOOKPOINT)
    p.add_argument("--device", default="auto")
    p.add_argument("--ctx-len", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--child", choices=["limit", "cache"], default=None)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()
    if args.child:
        result = child_limit(args) if args.child == "limit" else child_cache(args)
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    try:
        n = args.n_tokens
        limit = run_child(args, "limit", n, work / "limit")
        small = run_child(args, "cache", n, work / "small")
        large = run_child(args, "cache", 4 * n, work / "large")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "device": limit["device"],
        "n_tokens_small": small["tokens"],
        "n_tokens_large": large["tokens"],
        "tokens_per_s_forward_encode": round(limit["tokens_per_s_forward_encode"]),
        "tokens_per_s_full_forward": round(limit["tokens_per_s_full_forward"]),
        "tokens_per_s_cache": round(small["tokens_per_s_cache"]),
        "tokens_per_s_cache_large": round(large["tokens_per_s_cache"]),
        "tokens_per_s_cache_incl_startup": round(small["tokens_per_s_cache_incl_startup"]),
        "overhead_ratio": round(
            small["tokens_per_s_cache"] / limit["tokens_per_s_forward_encode"], 3
        ),
        "peak_rss_mb_limit": round(limit["peak_rss_mb"], 1),
        "peak_rss_mb_small": round(small["peak_rss_mb"], 1),
        "peak_rss_mb_large": round(large["peak_rss_mb"], 1),
        "rss_ratio_large_small": round(large["peak_rss_mb"] / small["peak_rss_mb"], 3),
        "mean_l0": round(limit["mean_l0"], 2),
        "timings_small": {k: small[k] for k in ("prepare_s", "forward_s", "merge_s")},
        "timings_large": {k: large[k] for k in ("prepare_s", "forward_s", "merge_s")},
        "shards_small": small["n_shards"],
        "shards_large": large["n_shards"],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
