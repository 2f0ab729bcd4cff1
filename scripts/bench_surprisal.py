"""Benchmark of the surprisal scorer's local LM (autointerp/scorers/surprisal_lm.py): windows
scored per second with the explanation prefix run once and its KV cache copied to each batch,
against one plain forward pass of prefix + window per window; and the largest difference
between the two losses (the cache must not change the numbers).

    python scripts/bench_surprisal.py --device cuda --windows 2048 --latents 8

Needs only torch, transformers and numpy (no run directory). Windows are 64-token chunks of
the Python standard library's source, tokenized by the model's tokenizer. Prints ONE JSON
object as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import sysconfig
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, str(Path(__file__).parents[1]))
from autointerp.scorers.surprisal_lm import PrefixLM  # noqa: E402

DEMO = Path(__file__).parents[1] / "autointerp" / "assets" / "demo" / "lm"
PREFIX = "The text below is an example of: {}\n"


def windows(tokenizer, n: int, length: int) -> list[str]:
    src = Path(sysconfig.get_paths()["stdlib"])
    text = "".join(p.read_text(errors="ignore") for p in sorted(src.glob("*.py"))[:60])
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    starts = np.random.default_rng(0).integers(0, len(ids) - length, n)
    return [tokenizer.decode(ids[s : s + length]) for s in starts]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=str(DEMO))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--windows", type=int, default=512, help="windows per latent")
    ap.add_argument("--latents", type=int, default=4, help="explanations (one prefix each)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--length", type=int, default=64, help="tokens per window")
    ap.add_argument("--plain", type=int, default=64, help="windows timed without the cache")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()
    lm = PrefixLM(model, tok, args.batch_size)
    texts = windows(tok, args.windows, args.length)
    prefixes = [
        PREFIX.format(f"the keyword number {i} in Python code") for i in range(args.latents)
    ]
    lm.explained_losses(prefixes[0], texts[: args.batch_size])  # warm-up
    sync(device)
    t0 = time.perf_counter()
    cached = [lm.explained_losses(p, texts) for p in prefixes]
    sync(device)
    cached_s = time.perf_counter() - t0

    plain, diffs = [], []
    t0 = time.perf_counter()
    with torch.inference_mode():
        p_ids = tok(prefixes[0])["input_ids"]
        for text, got in zip(texts[: args.plain], cached[0], strict=False):
            w = tok(lm.clean(text), add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + w], device=device)
            logp = model(ids).logits[0].float().log_softmax(-1)
            tgt = torch.tensor(w, device=device)
            loss = -logp[len(p_ids) - 1 : len(p_ids) - 1 + len(w)].gather(-1, tgt[:, None]).mean()
            plain.append(float(loss))
            diffs.append(abs(float(loss) - got.loss))
    sync(device)
    plain_s = time.perf_counter() - t0
    n = args.windows * args.latents
    out = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": args.dtype,
        "model": Path(args.model).name,
        "windows": args.windows,
        "latents": args.latents,
        "tokens_per_window": args.length,
        "batch_size": args.batch_size,
        "cached_windows_per_s": round(n / cached_s, 1),
        "plain_unbatched_windows_per_s": round(len(plain) / plain_s, 1),
        "speedup": round((n / cached_s) / (len(plain) / plain_s), 2),
        "max_abs_loss_diff": float(max(diffs)),
        "mean_loss": round(float(np.nanmean([w.loss for w in cached[0]])), 4),
        "torch": torch.__version__,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
