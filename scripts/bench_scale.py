"""Sharded execution: throughput and crash safety (not a timed test).

1. explain + detection + fuzzing of ``--latents`` demo latents against the fake OpenAI-
   compatible server (tests/llm/fake_server.py, scripted judge, its own process, ``--latency``)
   at one fixed total ``--concurrency``, as one process, as 2 worker processes, and as Ray
   with 2 workers (a local 2-CPU Ray started before the clock). ``efficiency_*`` = ideal /
   actual seconds, ideal = requests x latency / concurrency (what the LLM alone would take).
2. kill -9 with 2 workers, mid-way through scoring (the CLI in its own process group):
   - the whole run, then the same command again: ``repeated_after_kill`` = answers the server
     had sent before the kill that were asked again after it (target: <= concurrency, the
     requests in flight);
   - the parent alone: ``orphan_requests_after_kill`` = requests reaching the server more than
     0.5 s after the parent died (target 0), then a rerun: ``repeated_after_parent_kill``.

Prints, as its LAST line, one JSON object (with the machine's load average).

    python scripts/bench_scale.py --run-dir results/demo --latents 2000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_llm import start_server  # scripts/ is on sys.path when run as a script
from bench_score import count_requests, ensure_demo, fresh_copy

from autointerp.config import RunConfig, load_config, save_config
from autointerp.explainers.run import explain
from autointerp.scorers.run import score

SCORERS = ["detection", "fuzzing"]
ROOT = Path(__file__).resolve().parents[1]
KEY_ENV = "BENCH_FAKE_KEY"


def config(run: Path, port: int, args: argparse.Namespace, **extra: Any) -> RunConfig:
    return load_config(
        None,
        {
            "run_dir": str(run),
            "llm.model": "openai:bench-judge",
            "llm.base_url": f"http://127.0.0.1:{port}/v1",
            "llm.api_key_env": KEY_ENV,
            "llm.concurrency": args.concurrency,
            "llm.timeout_s": 60.0,
            **extra,
        },
    )


def throughput(run: Path, cfg: RunConfig, args: argparse.Namespace) -> dict[str, float]:
    latents = range(args.latents)
    t0 = time.perf_counter()
    explain(run, cfg, latents=latents, progress=False)
    score(run, cfg, scorers=SCORERS, latents=latents, progress=False)
    seconds = time.perf_counter() - t0
    requests = count_requests(run)
    ideal = requests * args.latency / args.concurrency
    return {"seconds": round(seconds, 2), "requests": requests, "efficiency": ideal / seconds}


def read_events(path: Path) -> list[tuple[float, str, str]]:
    out = []
    for line in path.read_text().splitlines():
        t, kind, key = line.split()
        out.append((float(t), kind, key))
    return out


def cli(run: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from autointerp.cli import app; app()", "score", str(run)]
    cmd += ["--scorers", ",".join(SCORERS), "--no-progress"]
    return subprocess.Popen(cmd, env=env, start_new_session=True, stderr=subprocess.DEVNULL)


def kill_test(
    src: Path, run: Path, events: Path, port: int, args: argparse.Namespace, whole: bool
) -> dict[str, int]:
    """Score with 2 workers, kill -9 when a third of the answers came, rerun to the end."""
    shutil.copytree(src, run)
    save_config(config(run, port, args, **{"score.workers": 2}), run)
    start = time.time()
    proc = cli(run)
    goal = args.kill_after
    while sum(1 for t, k, _ in read_events(events) if k == "answered" and t > start) < goal:
        if proc.poll() is not None:
            raise RuntimeError("the scoring run ended before the kill; raise --latents")
        time.sleep(0.05)
    if whole:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    killed = time.time()
    proc.wait()
    time.sleep(3.0)  # orphans, if any, would keep sending meanwhile
    rerun_at = time.time()
    orphans = sum(
        1 for t, k, _ in read_events(events) if k == "hit" and killed + 0.5 < t < rerun_at
    )
    again = cli(run)
    if again.wait() != 0:
        raise RuntimeError("the rerun failed")
    seen = read_events(events)
    before = {key for t, k, key in seen if k == "answered" and start < t < killed}
    after = {key for t, k, key in seen if k == "hit" and t > killed}
    import polars as pl

    keys = ["hookpoint", "latent", "explanation_id", "config_hash"]
    duplicates = 0
    for name in SCORERS:
        rows = pl.read_parquet(run / "scores" / f"{name}.parquet")
        duplicates += rows.height - rows.select(keys).n_unique()
    return {
        "repeated": len(before & after),
        "orphans": orphans,
        "answered_before_kill": len(before),
        "duplicate_rows": duplicates,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path("results/demo"))
    parser.add_argument("--n-tokens", type=int, default=262_144)
    parser.add_argument("--latents", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--kill-after", type=int, default=3000, help="answers before the kill")
    parser.add_argument("--skip", default="", help="comma list of 1proc,2proc,ray2,kill")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    skip = set(args.skip.split(","))
    os.environ.setdefault(KEY_ENV, "sk-bench")
    ensure_demo(args.run_dir, args.n_tokens)
    tmp = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    events = tmp / "events.log"
    proc, port = start_server(args.latency, "--responder", "judge", "--events", str(events))
    out: dict[str, Any] = {}
    try:
        modes = {
            "1proc": {"execution.workers": 1, "score.workers": 1},
            "2proc": {"execution.workers": 2, "score.workers": 2},
            "ray2": {"execution.engine": "ray", "execution.workers": 2},
        }
        for name, extra in modes.items():
            if name in skip:
                continue
            if name == "ray2":
                import ray

                ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
            run = fresh_copy(args.run_dir, tmp / name)
            res = throughput(run, config(run, port, args, **extra), args)
            out[f"efficiency_{name}"] = round(res["efficiency"], 4)
            out[f"seconds_{name}"] = res["seconds"]
            out["requests"] = res["requests"]
            print(json.dumps({name: res, "load": os.getloadavg()}), file=sys.stderr, flush=True)
        if "kill" not in skip:
            src = fresh_copy(args.run_dir, tmp / "kill_src")
            explain(src, config(src, port, args), latents=range(args.latents), progress=False)
            whole = kill_test(src, tmp / "kill_run", events, port, args, whole=True)
            print(json.dumps({"kill_run": whole}), file=sys.stderr, flush=True)
            parent = kill_test(src, tmp / "kill_parent", events, port, args, whole=False)
            out.update(
                repeated_after_kill=whole["repeated"],
                orphan_requests_after_kill=parent["orphans"] + whole["orphans"],
                repeated_after_parent_kill=parent["repeated"],
                answered_before_kill=whole["answered_before_kill"],
                duplicate_rows_after_reruns=whole["duplicate_rows"] + parent["duplicate_rows"],
            )
    finally:
        proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    out.update(
        latents=args.latents,
        latency_s=args.latency,
        concurrency=args.concurrency,
        ray2_vs_2proc=(
            round(out["efficiency_ray2"] / out["efficiency_2proc"], 3)
            if "efficiency_ray2" in out and "efficiency_2proc" in out
            else None
        ),
        load_average=[round(x, 2) for x in os.getloadavg()],
        cpus=os.cpu_count(),
        python=platform.python_version(),
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
