"""Benchmark (not a test): calibrate >= 256 demo-SAE latents to the target KL, batched and
latent-by-latent, on prompts cut from stdlib text; LAST line: one JSON object.

usage: python scripts/bench_intervention.py [--latents 256] [--device cpu] [--serial 32]
``--serial``: latents also calibrated one by one (the speedup is per latent, same prompts).
"""

from __future__ import annotations

import argparse
import json
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch

from autointerp.coders.loader import load_coder
from autointerp.config import DEMO_MODEL, SubjectConfig
from autointerp.scorers.calibration import Calibrator
from autointerp.subject.model import load_subject

HP = "model.layers.1"
SAE = Path(DEMO_MODEL).parent / "sae"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latents", type=int, default=256)
    ap.add_argument("--serial", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-rows", type=int, default=512)
    a = ap.parse_args()
    torch.manual_seed(0)
    model, tok = load_subject(SubjectConfig(model=DEMO_MODEL, device=a.device))
    dev = next(model.parameters()).device
    coder = load_coder(str(SAE), HP, device=dev)
    src = (Path(sysconfig.get_paths()["stdlib"]) / "argparse.py").read_text()
    ids = tok(src, add_special_tokens=False)["input_ids"]
    rng = np.random.default_rng(0)
    latents = sorted(rng.choice(coder.n_latents, a.latents, replace=False).tolist())
    prompts = {}
    for lat in latents:  # per latent: its own held-out-like prompts of 8-32 tokens
        starts = rng.integers(0, len(ids) - 40, a.prompts)
        prompts[lat] = [ids[s : s + int(rng.integers(8, 33))] for s in starts]
    rows = coder.decoder_rows.detach()[torch.tensor(latents, device=dev)]
    cal = Calibrator(model, HP, tok.pad_token_id, batch_rows=a.batch_rows)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    cal.calibrate(latents[:4], rows[:4], prompts, 0.5, 0.1, 12)  # warm-up
    sync()
    t0 = time.perf_counter()
    found = cal.calibrate(latents, rows, prompts, 0.5, 0.1, 12)
    sync()
    batched = time.perf_counter() - t0
    ser = latents[: a.serial]
    t0 = time.perf_counter()
    for i, lat in enumerate(ser):
        cal.calibrate([lat], rows[i : i + 1], prompts, 0.5, 0.1, 12)
    sync()
    serial = time.perf_counter() - t0
    kl = np.array([c.kl for c in found.values()])
    steps = np.array([c.n_forward for c in found.values()])
    out = {
        "latents": len(latents),
        "prompts_per_latent": a.prompts,
        "device": str(dev),
        "seconds": round(batched, 3),
        "forward_passes_per_latent": float(steps.mean()),
        "achieved_kl_median": float(np.median(kl)),
        "kl_within_tolerance_fraction": float(np.mean(np.abs(kl - 0.5) <= 0.05)),
        "serial_latents": len(ser),
        "serial_seconds_per_latent": round(serial / len(ser), 4),
        "batched_seconds_per_latent": round(batched / len(latents), 4),
        "batched_speedup": round((serial / len(ser)) / (batched / len(latents)), 2),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
