"""Re-measure the README's figures in one sitting (not a timed test).

Runs the benchmark scripts one after another, each in its own process, and records for each:
the command, the 1-minute load average before and after, its wall seconds, its exit code and
the JSON object it printed last. Meant for an idle machine: the load figures say whether it
was. Results go to ``--out`` (JSON lines, one per benchmark) and a Markdown table is printed.

    python scripts/remeasure.py [--only demo bench_score ...] [--skip ...] [--out FILE]

The LAST line printed is one JSON object: ``{name: {"wall_s", "rc", "load_before",
"load_after", "result"}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
CLI = str(Path(sys.executable).parent / "autointerp")  # the console script of this venv


def benchmarks(work: Path) -> dict[str, list[str]]:
    """name -> command. ``demo`` runs first (cold matplotlib cache, fresh run directory); the
    benchmarks that need a demo run directory get their own fresh one."""
    return {
        "demo": [
            "env", f"MPLCONFIGDIR={work / 'mpl'}", CLI, "demo",
            "--run-dir", str(work / "demo"), "--no-progress",
        ],
        "bench_llm": [PY, "scripts/bench_llm.py"],
        "bench_score": [PY, "scripts/bench_score.py", "--run-dir", str(work / "score")],
        "bench_intervention": [PY, "scripts/bench_intervention.py"],
        "bench_compare": [PY, "scripts/bench_compare.py"],
        "bench_cache": [PY, "scripts/bench_cache.py", "--ctx-len", "64", "256", "--scales", "1"],
        "bench_cache_synthetic": [
            PY, "scripts/bench_cache.py", "--synthetic", "--no-model",
            "--synthetic-tokens", "1048576",
        ],
        "bench_sampling": [PY, "scripts/bench_sampling.py", "--run-dir", str(work / "sampling")],
        "bench_shortcuts": [PY, "scripts/bench_shortcuts.py", "--run-dir", str(work / "shortcuts")],
        "mutation_check": [PY, "scripts/mutation_check.py"],
        "calibrate": [
            CLI, "calibrate", "--run-dir", str(work / "calibrate"),
            "--scorers", "detection,fuzzing,simulation,embedding,intruder,surprisal",
        ],
    }  # fmt: skip


def long_benchmarks(work: Path) -> dict[str, list[str]]:
    """Ten minutes or more each on 2 cores: run with ``--only`` (or ``--all``)."""
    return {
        "bench_prompt_cost": [PY, "scripts/bench_prompt_cost.py", "--run-dir", str(work / "cost")],
        "bench_scale": [PY, "scripts/bench_scale.py", "--run-dir", str(work / "scale")],
        "bench_embedding": [PY, "scripts/bench_embedding.py", "--run-dir", str(work / "demo")],
        "bench_real_llm": [PY, "scripts/bench_real_llm.py", "--run-dir", str(work / "real")],
    }


def last_json(text: str) -> object | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def run_one(name: str, cmd: list[str], log_dir: Path) -> dict[str, object]:
    load_before = os.getloadavg()[0]
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t
    (log_dir / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    return {
        "command": " ".join(cmd),
        "wall_s": round(wall, 1),
        "rc": proc.returncode,
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "result": last_json(proc.stdout),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    p.add_argument("--skip", nargs="*", default=[], help="benchmark names to leave out")
    p.add_argument("--all", action="store_true", help="also the long benchmarks")
    p.add_argument("--out", type=Path, default=Path("results/remeasure.jsonl"))
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: temp)")
    args = p.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="remeasure_"))
    table, long = benchmarks(work), long_benchmarks(work)
    unknown = [n for n in [*(args.only or []), *args.skip] if n not in table and n not in long]
    if unknown:
        sys.exit(f"unknown benchmark(s) {unknown}: choose from {sorted(table) + sorted(long)}")
    table.update(long)
    default = [*benchmarks(work), *(long if args.all else [])]
    names = [n for n in (args.only or default) if n not in args.skip]
    log_dir = work / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, dict[str, object]] = {}
    print("| benchmark | wall s | rc | load 1m before / after |", flush=True)
    print("|---|---|---|---|", flush=True)
    for name in names:
        res = run_one(name, table[name], log_dir)
        out[name] = res
        with args.out.open("a") as f:
            f.write(json.dumps({"name": name, "at": time.strftime("%F %T"), **res}) + "\n")
        print(
            f"| {name} | {res['wall_s']} | {res['rc']} | "
            f"{res['load_before']} / {res['load_after']} |",
            flush=True,
        )
    print(f"logs: {log_dir}", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
