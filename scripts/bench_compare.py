"""Benchmark of latent matching by decoder direction (not a timed test).

Writes two sparsify-format coders of ``--n-latents`` latents (A random; B a permuted copy of A
with noise on the decoder rows, so the true matching is known), then, in a fresh subprocess
(so peak RSS is that run's own), loads both with ``load_coder`` and matches them with
``decoder_similarity`` + ``match`` under ``--budget-mb`` (the default 512 MB cannot hold the
dense matrix at 16,384 x 16,384, so it is the chunked best-match path) and looks up the random
pairs of the baseline.
The LAST line printed is one JSON object with seconds (loading + matching), peak_rss_mb,
dense_matrix_mb (what a dense n x n float32 matrix would need), method, recovered (share of
latents of A matched to their true partner) and context.

    python scripts/bench_compare.py [--n-latents 16384] [--d 256] [--noise 0.3] [--budget-mb 512]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_coders(work: Path, n: int, d: int, noise: float, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(n, d, generator=g) * d**-0.5
    dec = torch.randn(n, d, generator=g) * d**-0.5
    perm = torch.randperm(n, generator=g)  # B latent j = A latent perm[j]
    dec_b = dec[perm] + noise * torch.randn(n, d, generator=g) * d**-0.5
    for name, e, w in (("a", enc, dec), ("b", enc[perm], dec_b)):
        folder = work / name
        folder.mkdir(parents=True)
        tensors = {
            "encoder.weight": e,
            "encoder.bias": torch.zeros(n),
            "W_dec": w,
            "b_dec": torch.zeros(d),
        }
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "sae.safetensors"))
        cfg = {
            "num_latents": n,
            "k": 32,
            "d_in": d,
            "normalize_decoder": True,
            "multi_topk": False,
            "skip_connection": False,
            "transcode": False,
            "expansion_factor": max(1, n // d),
        }
        (folder / "cfg.json").write_text(json.dumps(cfg))
    np.save(work / "perm.npy", perm.numpy())


def child(args: argparse.Namespace) -> dict[str, Any]:
    from autointerp.coders.loader import load_coder
    from autointerp.compare.matching import decoder_similarity, match, random_pairs

    work = Path(args.work)
    t0 = time.perf_counter()
    dec_a = load_coder(str(work / "a")).decoder_rows.numpy()
    dec_b = load_coder(str(work / "b")).decoder_rows.numpy()
    t1 = time.perf_counter()
    rand = random_pairs(len(dec_a), len(dec_b), 10_000, 0)
    sim = decoder_similarity(dec_a, dec_b, [rand], budget_mb=args.budget_mb)
    m = match(sim, len(dec_a), len(dec_b))
    t2 = time.perf_counter()
    perm = np.load(work / "perm.npy")
    truth = np.argsort(perm)  # A latent i = B latent truth[i]
    return {
        "load_s": t1 - t0,
        "match_s": t2 - t1,
        "method": m.method,
        "recovered": float((m.b == truth[m.a]).mean()),
        "matched_cos_median": float(np.median(m.score)),
        "random_cos_q95": float(np.quantile(sim.lookups[0], 0.95)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-latents", type=int, default=16_384)
    p.add_argument("--d", type=int, default=256)
    p.add_argument("--noise", type=float, default=0.3)
    p.add_argument("--budget-mb", type=float, default=512.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", action="store_true")
    p.add_argument("--work", default=None)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    work = Path(tempfile.mkdtemp(prefix="bench_compare_"))
    try:
        write_coders(work, args.n_latents, args.d, args.noise, args.seed)
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--work",
            str(work),
            "--budget-mb",
            str(args.budget_mb),
        ]
        t0 = time.perf_counter()
        out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True).stdout
        wall = time.perf_counter() - t0
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res = json.loads(out.strip().splitlines()[-1])
    n = args.n_latents
    report = {
        "n_latents_a": n,
        "n_latents_b": n,
        "d": args.d,
        "budget_mb": args.budget_mb,
        "method": res["method"],
        "recovered": round(res["recovered"], 4),
        "matched_cos_median": round(res["matched_cos_median"], 4),
        "random_cos_q95": round(res["random_cos_q95"], 4),
        "load_s": round(res["load_s"], 2),
        "match_s": round(res["match_s"], 2),
        "wall_s_incl_startup": round(wall, 2),
        "seconds": round(res["load_s"] + res["match_s"], 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: KiB
        "dense_matrix_mb": round(n * n * 4 / 2**20, 1),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
