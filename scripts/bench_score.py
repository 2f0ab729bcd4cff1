"""Throughput of explain + score (not a timed test).

1. LLM path: explain + detection + fuzzing for ``--latents`` demo latents against the fake
   OpenAI-compatible server (tests/llm/fake_server.py with the scripted judge, in its own
   process) at ``--latency`` and ``--concurrency``. ``ideal_seconds`` = requests x latency /
   concurrency: what the LLM alone would take. ``efficiency`` = ideal / actual (the stage's own
   work -- prompts, parsing, metrics, writing -- must not be what limits a run).
2. Lexical path: explain + detection + fuzzing for every demo latent with the offline lexical
   backend: ``lexical_latents_per_s``.

Prints, as its LAST line, one JSON object.

    python scripts/bench_score.py --run-dir results/demo --latents 512
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from bench_llm import start_server  # scripts/ is on sys.path when run as a script

from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.scorers.run import score

SCORERS = ["detection", "fuzzing"]


def fresh_copy(src: Path, dst: Path) -> Path:
    """The run's cache metadata, token table and examples, without earlier explanations or
    scores (fuzzing and intruder read the token table for their frequency matching)."""
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src / "examples", dst / "examples", ignore=shutil.ignore_patterns("_parts"))
    for meta in (src / "cache").glob("*/meta.json"):
        (dst / "cache" / meta.parent.name).mkdir(parents=True, exist_ok=True)
        for name in ("meta.json", "tokens.parquet"):
            shutil.copy(meta.parent / name, dst / "cache" / meta.parent.name / name)
    return dst


def ensure_demo(run_dir: Path, n_tokens: int) -> None:
    if (run_dir / "examples").is_dir():
        return
    from autointerp.cache import cache_activations
    from autointerp.sampling.build import build_examples

    cfg = load_config(None, {"run_dir": str(run_dir), "cache.n_tokens": n_tokens})
    cache_activations(cfg, progress=False)
    build_examples(run_dir, cfg, progress=False)


def count_requests(run: Path) -> int:
    return sum(json.loads(line)["requests"] for line in (run / "llm_usage.jsonl").open())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path("results/demo"))
    parser.add_argument("--n-tokens", type=int, default=262_144)
    parser.add_argument("--latents", type=int, default=512)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--skip-lexical", action="store_true")
    parser.add_argument("--workers", type=int, default=None, help="score.workers (default auto)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    ensure_demo(args.run_dir, args.n_tokens)
    tmp = Path(tempfile.mkdtemp(prefix="bench_score_"))
    out: dict[str, object] = {}
    proc, port = start_server(args.latency, "--responder", "judge")
    try:
        os.environ.setdefault("BENCH_FAKE_KEY", "sk-bench")
        run = fresh_copy(args.run_dir, tmp / "llm")
        cfg = load_config(
            None,
            {
                "run_dir": str(run),
                "llm.model": "openai:bench-judge",
                "llm.base_url": f"http://127.0.0.1:{port}/v1",
                "llm.api_key_env": "BENCH_FAKE_KEY",
                "llm.concurrency": args.concurrency,
                "llm.timeout_s": 30.0,
                "score.workers": args.workers,
            },
        )
        latents = range(args.latents)
        import psutil

        server = psutil.Process(proc.pid)
        s0 = sum(server.cpu_times()[:2])
        c0 = time.process_time()
        t0 = time.perf_counter()
        explain(run, cfg, latents=latents, progress=False)
        t_explain = time.perf_counter() - t0
        score(run, cfg, scorers=SCORERS, latents=latents, progress=False)
        seconds = time.perf_counter() - t0
        client_cpu = time.process_time() - c0
        server_cpu = sum(server.cpu_times()[:2]) - s0
        requests = count_requests(run)
        ideal = requests * args.latency / args.concurrency
        out.update(
            latents=args.latents,
            requests=requests,
            seconds=round(seconds, 2),
            ideal_seconds=round(ideal, 2),
            efficiency=round(ideal / seconds, 4),
            requests_per_s=round(requests / seconds, 1),
            explain_seconds=round(t_explain, 2),
            stage_cpu_s=round(client_cpu, 2),
            stage_cpu_ms_per_request=round(1000 * client_cpu / requests, 3),
            server_cpu_s=round(server_cpu, 2),
            latency_s=args.latency,
            concurrency=args.concurrency,
        )
    finally:
        proc.kill()
    if not args.skip_lexical:
        run = fresh_copy(args.run_dir, tmp / "lexical")
        cfg = load_config(None, {"run_dir": str(run)})
        t0 = time.perf_counter()
        explain(run, cfg, progress=False)
        t1 = time.perf_counter()
        score(run, cfg, scorers=SCORERS, progress=False)
        t2 = time.perf_counter()
        import polars as pl

        n = pl.read_parquet(run / "explanations.parquet").height
        out.update(
            lexical_latents=n,
            lexical_explain_s=round(t1 - t0, 2),
            lexical_score_s=round(t2 - t1, 2),
            lexical_latents_per_s=round(n / (t2 - t0), 1),
        )
    out.update(
        cpus=os.cpu_count(), python=platform.python_version(), load_avg_1m=os.getloadavg()[0]
    )
    if os.environ.get("BENCH_KEEP"):
        print(tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
