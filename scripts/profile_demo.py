"""Profile `autointerp demo` stage by stage (not a timed test).

Runs, in one fresh process, what `autointerp demo` runs, in the same order: the imports of the
CLI, the cache, sample, explain, score and report stages, then the printed previews and
summary. Each step gets its wall seconds and its CPU seconds (this process's threads plus the
worker processes; ``score_report``: score and report in one pipeline call, as the demo runs
them, split into ``score`` and ``report``; the report writes the shortcut audit in a second
process), so a run on a shared machine still shows where the time goes: the CPU shares
barely move with load, the wall clock does. matplotlib's font cache starts empty
(``MPLCONFIGDIR`` in a fresh temp folder) unless ``--warm`` is given, as on a first run.

    python scripts/profile_demo.py [--run-dir DIR] [--n-tokens 262144] [--warm]

The LAST line printed is one JSON object: ``total_wall_s``, ``total_cpu_s``, per step
``wall_s``/``cpu_s``/``cpu_share``, and the 1-minute load average at the start and end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default=None, help="default: a fresh temp folder")
    p.add_argument("--n-tokens", type=int, default=262_144)
    p.add_argument("--warm", action="store_true", help="keep matplotlib's font cache")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="profile_demo_"))
    if not args.warm:
        os.environ["MPLCONFIGDIR"] = str(tmp / "mpl")
    run_dir = Path(args.run_dir) if args.run_dir else tmp / "run"
    steps: dict[str, dict[str, float]] = {}
    load_start = os.getloadavg()[0]
    t_start, c_start = time.perf_counter(), cpu_seconds()

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t, c = time.perf_counter(), cpu_seconds()
        out = fn()
        steps[name] = {"wall_s": time.perf_counter() - t, "cpu_s": cpu_seconds() - c}
        print(json.dumps({"step": name, **steps[name]}), flush=True)
        return out

    def imports() -> None:
        import autointerp.cli  # noqa: F401  (what the console script loads first)
        from autointerp.pipeline import run_pipeline  # noqa: F401

    step("imports", imports)
    from autointerp.cli.common import resolve_config, setup_logging
    from autointerp.cli.score import print_summary
    from autointerp.pipeline import demo_config, run_pipeline

    setup_logging(False)
    names = ["detection", "fuzzing", "simulation"]
    cfg = resolve_config(
        None, {**demo_config(run_dir), "cache.n_tokens": args.n_tokens, "score.scorers": names}
    )
    import autointerp.scorers.run as score_run  # _run_stages imports score from here

    real_score = score_run.score

    def timed_score(*a: Any, **k: Any) -> Any:  # the score stage's part of score + report
        t, c = time.perf_counter(), cpu_seconds()
        result = real_score(*a, **k)
        steps["score"] = {"wall_s": time.perf_counter() - t, "cpu_s": cpu_seconds() - c}
        return result

    score_run.score = timed_score
    out: dict[str, Any] = {}
    for stage in ("cache", "sample", "explain"):
        result = step(stage, lambda s=stage: run_pipeline(cfg, stages=[s], progress=False))
        out.update(result)
    # score and report in one call, as the demo runs them: the report writes the score
    # stage's shortcut audit in a second process beside its detail files
    result = step(
        "score_report", lambda: run_pipeline(cfg, stages=["score", "report"], progress=False)
    )
    out.update(result)
    steps["report"] = {k: steps["score_report"][k] - steps["score"][k] for k in ("wall_s", "cpu_s")}

    def printed() -> None:
        from transformers import AutoTokenizer

        from autointerp.preview import preview_explanations, preview_latents

        tok = AutoTokenizer.from_pretrained(cfg.subject.model, local_files_only=True)
        with contextlib.redirect_stdout(io.StringIO()):
            for path in out["sample"]:
                list(preview_latents(path, tok))
            list(preview_explanations(out["explain"]))
            print_summary(run_dir, names)

    step("print", printed)
    total_wall = time.perf_counter() - t_start
    total_cpu = cpu_seconds() - c_start
    for s in steps.values():
        s["cpu_share"] = s["cpu_s"] / total_cpu
        for k in ("wall_s", "cpu_s", "cpu_share"):
            s[k] = round(s[k], 3)
    if not args.run_dir:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {
        "n_tokens": args.n_tokens,
        "font_cache": "warm" if args.warm else "cold",
        "total_wall_s": round(total_wall, 1),
        "total_cpu_s": round(total_cpu, 1),
        "steps": steps,
        "load_avg_1m_start": round(load_start, 2),
        "load_avg_1m_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
