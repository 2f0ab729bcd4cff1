"""Benchmark of the cache stage on the bundled demo model + SAE (not a timed test).

For each ``--ctx-len`` it runs, each in a fresh subprocess (so peak RSS is that run's own):
  limit  the bare forward (stopped at the deepest hookpoint) + SAE encode_sparse over N tokens,
         windows tokenized beforehand, nothing written: the speed limit of caching;
  cache  the full cache (cache_activations, fresh run directory, default memory settings) of
         s * N tokens for every scale s of ``--scales`` (default 1 4 16).
The text is the standard library's source, repeated in a JSON-lines file when the largest
scale needs more tokens than it holds. The LAST line printed is one JSON object with
peak_rss_mb_ctx<C>_<s>N for every run, rss_growth_max (the largest peak RSS ratio of the
largest scale to the smallest, over the context lengths), overhead_ratio (the smallest, over
the context lengths, of full cache / limit tokens/s at N; with ``--repeats R`` the limit and
the cache at N run R times each, alternating, and the fastest of each counts;
overhead_ratio_paired_ctx<C>: the median over the repeats of each cache run over the limit run
just before it) and context.

With ``--synthetic`` it first measures the host ceiling: the whole cache stage (same code,
same files) fed by random sparse codes at memory speed instead of a model
(autointerp/cache/synthetic.py), at L0 32 and 128 with 4,096 and 65,536 latents, each in a
fresh process: ``host_ceiling_tok_s`` (tokens / wall seconds of forward + merge, keyed
``l0_<L0>_latents_<N>``). The codes come sorted by latent, as the encoder leaves them on a
GPU; ``host_ceiling_host_sort_tok_s`` is the L0 32 / 4,096 run with every batch sorted on the
CPU instead (as without a GPU, where that sort is the encoder's work: bench_cache's limit
run counts it too); also ``host_cpu_ns_per_token`` (CPU time of all the stage's threads: a
figure that load on a shared machine distorts less), ``host_cpu_us_per_token`` (the same from
getrusage, user + system time, and user time alone), ``host_cpu_bound_tok_s`` (cores / CPU
seconds a token: the ceiling if every core ran the stage and nothing else; an upper bound, not
a measurement) and the peak RSS of each run.
``--no-model`` skips the model runs.

    python scripts/bench_cache.py [--n-tokens 262144] [--ctx-len 64 256] [--scales 1 4 16]
        [--batch-size B] [--model DIR] [--sae DIR] [--device auto]
        [--synthetic [--synthetic-tokens 2097152] [--no-model]]

The batch size defaults to 64 windows at ctx_len <= 64 and 8,192 tokens above (32 at 256).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
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
            "dataset.source": args.dataset,
        },
    )


def child_limit(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from autointerp.cache.budget import steady_heap
    from autointerp.cache.encode import SparseEncoder
    from autointerp.cache.prepare import prepare

    cfg = make_config(args, Path(args.run_dir), args.n_tokens)
    prep = prepare(cfg)
    windows = np.stack(list(prep.windows))
    bs = cfg.cache.batch_size
    jobs = prep.jobs
    coders = {j.hookpoint.spec: j.coder for j in jobs}
    # the allocator settings the stage runs its forward under (budget.steady_heap): without
    # them the limit pays page faults the stage does not, and comes out slower than the stage
    with (
        steady_heap(),
        SparseEncoder(
            prep.model, [j.hookpoint for j in jobs], coders, prep.device, prep.skip_first
        ) as enc,
    ):
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


SYNTHETIC = [(32, 4096), (128, 4096), (32, 65536), (128, 65536)]  # (L0, latents)


def child_synthetic(args: argparse.Namespace) -> dict[str, Any]:
    from autointerp.cache.run import cache_prepared
    from autointerp.cache.synthetic import synthetic_prepared

    cfg = make_config(args, Path(args.run_dir), args.n_tokens)
    prep = synthetic_prepared(cfg, args.l0, args.n_latents, host_sort=args.host_sort)
    timings: dict[str, float] = {}
    before = resource.getrusage(resource.RUSAGE_SELF)  # every thread of the process
    cache_prepared(cfg, prep, progress=False, timings=timings)
    after = resource.getrusage(resource.RUSAGE_SELF)
    n_tokens = prep.n_windows * cfg.cache.ctx_len
    wall = timings["forward_s"] + timings["merge_s"]
    cpu = timings["forward_cpu_s"] + timings["merge_cpu_s"]
    return {
        "tokens": n_tokens,
        "tokens_per_s": n_tokens / wall,
        "cpu_ns_per_token": cpu / n_tokens * 1e9,
        "user_us_per_token": (after.ru_utime - before.ru_utime) / n_tokens * 1e6,
        "sys_us_per_token": (after.ru_stime - before.ru_stime) / n_tokens * 1e6,
        **{k: round(v, 3) for k, v in timings.items()},
    }


def bench_synthetic(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ceiling, cpu, cpu_us, bound, rss, timings = {}, {}, {}, {}, {}, {}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    args.ctx_len, args.batch_size = 64, 64
    runs = [(l0, n, False) for l0, n in SYNTHETIC] + [(*SYNTHETIC[0], True)]
    for l0, n_latents, host_sort in runs:
        key = f"l0_{l0}_latents_{n_latents}" + ("_host_sort" if host_sort else "")
        extra = ("--l0", str(l0), "--n-latents", str(n_latents))
        extra += ("--host-sort",) if host_sort else ()
        r = run_child(args, "synthetic", args.synthetic_tokens, work / key, extra)
        shutil.rmtree(work / key, ignore_errors=True)
        ceiling[key] = round(r["tokens_per_s"])
        cpu[key] = round(r["cpu_ns_per_token"])
        us = r["user_us_per_token"] + r["sys_us_per_token"]
        cpu_us[key] = {"total": round(us, 2), "user": round(r["user_us_per_token"], 2)}
        bound[key] = round((cores or 1) / us * 1e6)
        rss[key] = round(r["peak_rss_mb"], 1)
        timings[key] = {k: r[k] for k in ("forward_s", "merge_s", "forward_cpu_s", "merge_cpu_s")}
    sorted_ceiling = ceiling.pop(f"l0_{SYNTHETIC[0][0]}_latents_{SYNTHETIC[0][1]}_host_sort")
    return {
        "synthetic_tokens": args.synthetic_tokens,
        "host_ceiling_host_sort_tok_s": sorted_ceiling,
        "host_cpu_ns_per_token": cpu,
        "host_cpu_us_per_token": cpu_us,
        "host_cpu_bound_tok_s": bound,
        "cores": cores,
        "host_peak_rss_mb": rss,
        "host_timings": timings,
        "host_ceiling_tok_s": ceiling,
    }


def run_child(
    args: argparse.Namespace, mode: str, n_tokens: int, run_dir: Path, extra: tuple[str, ...] = ()
) -> dict:
    """Run one mode in a fresh process; returns its JSON plus its own peak RSS (wait4)."""
    cmd = [sys.executable, __file__, "--child", mode, "--n-tokens", str(n_tokens)]
    cmd += ["--run-dir", str(run_dir), "--model", args.model, "--sae", args.sae]
    cmd += ["--hookpoint", args.hookpoint, "--device", args.device]
    cmd += ["--dataset", args.dataset] if args.dataset else []
    cmd += ["--ctx-len", str(args.ctx_len), "--batch-size", str(args.batch_size), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} run failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"mode": mode, "ctx_len": args.ctx_len, **result}), flush=True)
    return result


def write_dataset(path: Path, n_tokens: int) -> str:
    """The stdlib text as JSON lines, repeated until it holds ~1.2 x n_tokens (~3.5 chars a
    token), so that no scale runs out of text."""
    from autointerp.data.stdlib import stdlib_texts

    texts = list(stdlib_texts("all"))
    chars = sum(len(t) for t in texts)
    repeats = max(1, -(-int(n_tokens * 1.2 * 3.5) // chars))
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(repeats):
            for text in texts:
                fh.write(json.dumps({"text": text}) + "\n")
    return str(path)


def bench_ctx(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    ctx, n = args.ctx_len, args.n_tokens
    # limit and cache at N alternate --repeats times and the fastest of each counts: load from
    # other jobs only slows a run down, so the fastest is the least disturbed (both the same way)
    limits, firsts = [], []
    for r in range(args.repeats):
        limits.append(run_child(args, "limit", n, work / f"limit{ctx}_{r}"))
        if r < args.repeats - 1:
            firsts.append(run_child(args, "cache", n, work / f"cache{ctx}_1_{r}"))
            shutil.rmtree(work / f"cache{ctx}_1_{r}", ignore_errors=True)
    runs = {s: run_child(args, "cache", s * n, work / f"cache{ctx}_{s}") for s in args.scales}
    first, last = runs[args.scales[0]], runs[args.scales[-1]]
    if args.scales[0] == 1:
        firsts.append(first)
    limit = max(limits, key=lambda x: x["tokens_per_s_forward_encode"])
    fastest = max(firsts or [first], key=lambda x: x["tokens_per_s_cache"])
    out: dict[str, Any] = {
        f"tokens_per_s_forward_encode_ctx{ctx}": round(limit["tokens_per_s_forward_encode"]),
        f"tokens_per_s_cache_ctx{ctx}": round(fastest["tokens_per_s_cache"]),
        f"overhead_ratio_ctx{ctx}": round(
            fastest["tokens_per_s_cache"] / limit["tokens_per_s_forward_encode"], 3
        ),
        # each cache run over the limit run just before it, the median: drift in the
        # machine's speed between the start and the end of a sitting cancels out
        f"overhead_ratio_paired_ctx{ctx}": round(
            statistics.median(
                c["tokens_per_s_cache"] / lim["tokens_per_s_forward_encode"]
                for lim, c in zip(limits, firsts or [first], strict=False)
            ),
            3,
        ),
        f"samples_ctx{ctx}": {
            "forward_encode": [round(x["tokens_per_s_forward_encode"]) for x in limits],
            "cache": [round(x["tokens_per_s_cache"]) for x in firsts or [first]],
        },
        f"peak_rss_mb_ctx{ctx}_limit": round(limit["peak_rss_mb"], 1),
    }
    for s, r in runs.items():
        out[f"peak_rss_mb_ctx{ctx}_{s}N"] = round(r["peak_rss_mb"], 1)
    out[f"rss_growth_ctx{ctx}"] = round(last["peak_rss_mb"] / first["peak_rss_mb"], 3)
    out[f"mean_l0_ctx{ctx}"] = round(limit["mean_l0"], 2)
    out[f"timings_ctx{ctx}"] = {
        f"{s}N": {k: r[k] for k in ("prepare_s", "forward_s", "merge_s")} for s, r in runs.items()
    }
    out[f"shards_ctx{ctx}"] = {f"{s}N": r["n_shards"] for s, r in runs.items()}
    out["device"] = limit["device"]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-tokens", type=int, default=262_144)
    p.add_argument("--model", default=DEMO_MODEL)
    p.add_argument("--sae", default=DEMO_CODER)
    p.add_argument("--hookpoint", default=DEMO_HOOKPOINT)
    p.add_argument("--device", default="auto")
    p.add_argument("--ctx-len", type=int, nargs="+", default=[64, 256])
    p.add_argument("--scales", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument(
        "--repeats", type=int, default=1, help="limit / cache pairs at N; the fastest counts"
    )
    p.add_argument("--dataset", default=None, help="default: the stdlib text, repeated as needed")
    p.add_argument("--synthetic", action="store_true", help="also measure the host ceiling")
    p.add_argument("--synthetic-tokens", type=int, default=2_097_152)
    p.add_argument("--no-model", action="store_true", help="skip the model runs")
    p.add_argument("--l0", type=int, default=32)
    p.add_argument("--n-latents", type=int, default=4096)
    p.add_argument("--host-sort", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--child", choices=["limit", "cache", "synthetic"], default=None)
    p.add_argument("--run-dir", default=None)
    args = p.parse_args()
    if args.child:
        args.ctx_len = args.ctx_len[0]
        child = {"limit": child_limit, "cache": child_cache, "synthetic": child_synthetic}
        result = child[args.child](args)
        print(json.dumps(result))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_cache_"))
    report: dict[str, Any] = {"n_tokens": args.n_tokens, "scales": args.scales}
    report["load_avg_1m_start"] = round(os.getloadavg()[0], 2)
    batch_size, ctx_lens = args.batch_size, args.ctx_len
    try:
        if args.synthetic:
            report.update(bench_synthetic(args, work))
        if args.no_model:
            ctx_lens = []
        elif args.dataset is None:
            top = args.n_tokens * max(args.scales)
            args.dataset = write_dataset(work / "text.jsonl", top)
        for ctx in ctx_lens:
            args.ctx_len = ctx
            args.batch_size = batch_size or (64 if ctx <= 64 else max(1, 8192 // ctx))
            report.update(bench_ctx(args, work))
            report[f"batch_size_ctx{ctx}"] = args.batch_size
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ctxs = [k for k in report if k.startswith("rss_growth_ctx")]
    ratios = [v for k, v in report.items() if k.startswith("overhead_ratio_ctx")]
    if ctxs:
        report["rss_growth_max"] = max(report[k] for k in ctxs)
        report["overhead_ratio"] = min(ratios)
    report["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
