"""Demo-scale check of `autointerp compare`: the bundled SAE vs a second SAE trained with
another seed on the same bundled LM (model.layers.1).

1. trains the second TopK SAE with scripts/train_demo.py's functions (same recipe, other seed,
   fewer tokens by default) on activations of the bundled LM over stdlib training windows;
2. caches both coders on the same tokens (two runs), samples, explains with the offline
   lexical baseline (`--llm lexical`);
3. runs `autointerp compare` (decoder cosine, optimal assignment at 4,096 x 4,096) and prints
   its summary; the LAST line is one JSON object with the headline numbers.

    python scripts/demo_compare.py [--out results/demo_compare] [--seed 1] [--sae-tokens 300000]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import torch

from autointerp.config import DEMO_CODER, DEMO_HOOKPOINT, DEMO_MODEL

HERE = Path(__file__).resolve().parent


def train_demo_module():
    spec = importlib.util.spec_from_file_location("train_demo", HERE / "train_demo.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    sys.modules["train_demo"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def train_second_sae(out: Path, seed: int, sae_tokens: int, threads: int) -> Path:
    from transformers import AutoTokenizer, LlamaForCausalLM

    from autointerp.data.stdlib import stdlib_texts

    td = train_demo_module()
    folder = out / "sae_seed" / DEMO_HOOKPOINT
    if (folder / "sae.safetensors").is_file():
        return folder.parent
    torch.set_num_threads(threads)
    args = td.parse_args(["--seed", str(seed), "--sae-tokens", str(sae_tokens)])
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL)
    model = LlamaForCausalLM.from_pretrained(DEMO_MODEL).eval()
    texts = list(stdlib_texts("train"))
    windows = td.make_windows(td.token_stream(tok, texts), args.ctx_len, tok.bos_token_id)
    gen = torch.Generator().manual_seed(seed + 2)
    order = torch.randperm(len(windows), generator=gen)
    n_w = min(len(order), math.ceil(sae_tokens / (args.ctx_len - 1)))
    with torch.no_grad():
        train_acts = td.collect_activations(model, windows[order[:n_w]])
        val_acts = td.collect_activations(model, windows[order[n_w : n_w + 200]])
    sae, stats = td.train_sae(train_acts, val_acts, args)
    td.save_sae(sae, folder)
    (out / "sae_seed" / "TRAINING.json").write_text(json.dumps(stats, indent=2))
    return folder.parent


def cli(*args: str) -> str:
    cmd = [str(Path(sys.executable).parent / "autointerp"), *args]
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("results/demo_compare"))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sae-tokens", type=int, default=300_000)
    p.add_argument("--n-tokens", type=int, default=131_072, help="tokens cached per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--embedding", default="all-MiniLM-L6-v2")
    args = p.parse_args()
    second = train_second_sae(args.out, args.seed, args.sae_tokens, args.threads)
    runs = {"bundled": DEMO_CODER, f"seed{args.seed}": str(second)}
    for name, coder in runs.items():
        run = str(args.out / name)
        if not (Path(run) / "cache" / DEMO_HOOKPOINT / "meta.json").is_file():
            cli(
                "cache",
                "--run-dir",
                run,
                "--no-progress",
                "--sae",
                coder,
                "--n-tokens",
                str(args.n_tokens),
            )
        cli("sample", run, "--no-progress")
        cli("explain", run, "--no-progress", "--llm", "lexical")
    a, b = (str(args.out / n) for n in runs)
    print(cli("compare", a, b, "--embedding", args.embedding))
    out = args.out / "compare" / f"bundled.{DEMO_HOOKPOINT}__seed{args.seed}.{DEMO_HOOKPOINT}"
    s = json.loads((out / "summary.json").read_text())
    m = s["metrics"]
    line = {
        "method": s["method"],
        "n_pairs": s["n_pairs"],
        "n_above_threshold": s["n_above_threshold"],
        "n_orphans_a": s["n_orphans_a"],
        "n_orphans_b": s["n_orphans_b"],
        "embedding": s["embedding"],
        **{
            f"{k}_{part}": round(m[k][part]["mean"], 4)
            for k in m
            for part in ("matched", "matched_above_threshold", "random")
            if m[k].get(part)
        },
        **{
            f"{k}_beat_random_q95_frac": round(m[k]["beat_random_q95_frac"], 4)
            for k in m
            if "beat_random_q95_frac" in m[k]
        },
    }
    print(json.dumps(line))


if __name__ == "__main__":
    main()
