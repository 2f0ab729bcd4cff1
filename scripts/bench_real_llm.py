"""The pipeline's overhead with a real model: SmolLM2-135M-Instruct on in-process vLLM (CPU).

1. explain + detection of N demo latents through the pipeline (``explain`` and ``score``
   stages, ``llm.model = vllm:smollm2-135m-instruct``); every request the backend receives is
   recorded, and the engine's start-up time is left out of the pipeline's time;
2. the SAME requests handed to ONE ``vllm.LLM.chat`` call (the engine's own limit on this
   machine: everything in one batch), on a fresh engine with the same settings.

Efficiency = engine seconds / pipeline seconds (target >= 0.8). The prefix-cache hit rate is
read from vLLM's metrics of the pipeline's engines; the parse-failure rate counts explanation
and detection answers that did not parse. The demo's cache and examples are built once
(lexical, no LLM) in --run-dir. The LAST line of stdout is one JSON object.

    python scripts/bench_real_llm.py [--latents 8] [--n-tokens 65536] [--run-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

MODEL = "smollm2-135m-instruct"


def _metrics(llm: Any) -> dict[str, float]:
    """vLLM's counters of prefix-cache queries and hits (tokens), where it exposes them."""
    out: dict[str, float] = {}
    try:
        for m in llm.get_metrics():
            if m.name in ("vllm:prefix_cache_queries", "vllm:prefix_cache_hits"):
                out[m.name] = out.get(m.name, 0.0) + float(getattr(m, "value", 0.0))
    except Exception as e:  # metrics are optional on some platforms
        logging.getLogger(__name__).warning("no vLLM metrics: %r", e)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--latents", type=int, default=8)
    p.add_argument("--n-tokens", type=int, default=65_536)
    p.add_argument("--run-dir", type=Path, default=Path("results/bench_real_llm"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    import polars as pl

    from autointerp.config import load_config
    from autointerp.explainers.run import explain
    from autointerp.llm import vllm_backend
    from autointerp.models import fetch, resolve_model
    from autointerp.pipeline import demo_config, run_pipeline
    from autointerp.scorers.run import score

    fetch(MODEL)
    run = args.run_dir
    base = {**demo_config(run), "cache.n_tokens": args.n_tokens}
    if not (run / "examples").is_dir():
        run_pipeline(load_config(None, base), stages=["cache", "sample"], progress=False)
    for stale in ("explanations.parquet", "scores", "llm_cache.sqlite", "llm_usage.jsonl"):
        path = run / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    latents = list(range(args.latents))
    # the offline token-list explanations too (not timed): detection then has work even
    # where SmolLM2's own explanation failed (the score stage scores every explainer's)
    explain(
        run,
        load_config(None, {**base, "explain.explainer": "token-list"}),
        latents=latents,
        progress=False,
    )
    overrides = {
        **base,
        "llm.model": f"vllm:{MODEL}",
        "llm.cache": False,
        "llm.vllm.dtype": "float32",
        "llm.vllm.extra": {"disable_log_stats": False},
        "explain.max_tokens": 80,
        "score.detection.max_tokens": 80,
    }
    cfg = load_config(None, overrides)

    # -- 1. the pipeline, recording requests, engine start-ups and metrics -------------------
    Backend, Engine = vllm_backend.VLLMBackend, vllm_backend.Engine
    requests: list[Any] = []
    startup = [0.0]
    metrics: list[dict[str, float]] = []
    build, shutdown, complete = Engine._build, Engine._shutdown, Backend.complete

    def timed_build(self: Any) -> Any:
        t0 = time.monotonic()
        try:
            return build(self)
        finally:
            startup[0] += time.monotonic() - t0

    def metered_shutdown(self: Any) -> None:
        if self._llm is not None:
            metrics.append(_metrics(self._llm))
        shutdown(self)

    async def recorded(self: Any, request: Any) -> Any:
        requests.append(request)
        return await complete(self, request)

    Engine._build, Engine._shutdown, Backend.complete = timed_build, metered_shutdown, recorded
    t0 = time.monotonic()
    explain(run, cfg, latents=latents, progress=False)
    paths = score(run, cfg, scorers=["detection"], latents=latents, progress=False)
    total = time.monotonic() - t0
    vllm_backend.close_engines()  # the stages' one engine: its metrics, then its memory
    Engine._build, Engine._shutdown, Backend.complete = build, shutdown, complete
    pipeline_s = total - startup[0]

    expl = pl.read_parquet(run / "explanations.parquet").filter(pl.col("explainer") == "default")
    # no examples file when no latent got a usable explanation (nothing was judged)
    det_path = Path(str(paths["detection"]).replace(".parquet", ".examples.parquet"))
    n_prompts = n_prompt_errors = 0
    if det_path.is_file():
        det_prompts = (
            pl.read_parquet(det_path)
            .select("hookpoint", "latent", "explanation_id", "prompt", "error")
            .unique(["hookpoint", "latent", "explanation_id", "prompt"])
        )
        n_prompts = det_prompts.height
        n_prompt_errors = int(det_prompts["error"].is_not_null().sum())
    n_answers = expl.height + n_prompts
    n_failed = int((expl["status"] != "ok").sum()) + n_prompt_errors

    # -- 2. the same requests in one engine call ---------------------------------------------
    engine = Engine(cfg.llm.model_name, resolve_model(cfg.llm.model_name), cfg.llm.vllm)
    llm = engine._build()
    chats = [r for r in requests if r.messages is not None]
    params = [engine._sampling(r) for r in chats]
    convs = [[m.model_dump() for m in r.messages] for r in chats]
    t1 = time.monotonic()
    llm.chat(convs, params, use_tqdm=False)
    engine_s = time.monotonic() - t1
    engine._llm = llm
    engine._shutdown()

    queries = sum(m.get("vllm:prefix_cache_queries", 0.0) for m in metrics)
    hits = sum(m.get("vllm:prefix_cache_hits", 0.0) for m in metrics)
    load = os.getloadavg()
    print(
        json.dumps(
            {
                "model": MODEL,
                "latents": args.latents,
                "requests": len(requests),
                "chat_requests": len(chats),
                "explanations_ok": int((expl["status"] == "ok").sum()),
                "engine_startup_seconds_excluded": round(startup[0], 1),
                "pipeline_seconds": round(pipeline_s, 2),
                "engine_seconds": round(engine_s, 2),
                "efficiency": round(engine_s / pipeline_s, 3) if pipeline_s > 0 else None,
                "prefix_cache_hit_rate": round(hits / queries, 3) if queries else None,
                "parse_failure_rate": round(n_failed / n_answers, 3) if n_answers else None,
                "load_avg_1_5_15": [round(x, 2) for x in load],
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
