"""Shortcut audit of the demo run (not a timed test).

Builds the demo run through the pipeline (bundled model + SAE over the stdlib text, the
offline lexical baseline as explainer and judge; every latent), scores it with detection,
fuzzing and intruder, and prints per scorer the mean balanced accuracy (over latents) of each
explanation-free cue judge and of the cross-validated ceiling (scorers/audit.py), beside the
judge's own score. Then runs ``scripts/mutation_check.py`` (when it exists) for the mutation
figures. Prints, as its LAST line, one JSON object.

    python scripts/bench_shortcuts.py --run-dir results/bench_shortcuts
    python scripts/bench_shortcuts.py --reuse-cache results/demo   # skip the cache stage
    python scripts/bench_shortcuts.py --latents 512 --no-mutations  # a quicker look

Targets: every cue figure <= 0.53 (chance 0.5); mutations_killed == mutations_total.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from autointerp.config import load_config
from autointerp.pipeline import demo_config, run_pipeline
from autointerp.scorers.audit import AUDITED
from autointerp.scorers.audit_cues import CEILING
from autointerp.scorers.audit_summary import audit_summary, format_audit
from autointerp.scorers.summary import summarize

SCORERS = ["detection", "fuzzing", "intruder"]


def copy_cache(src: Path, dst: Path) -> None:
    """The finished activation cache of another demo run (same model, SAE and text)."""
    for meta in (src / "cache").glob("*/meta.json"):
        target = dst / "cache" / meta.parent.name
        if not (target / "meta.json").is_file():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(meta.parent, target)


def mutations() -> dict[str, object]:
    """mutations_total / mutations_killed from scripts/mutation_check.py's JSON last line."""
    script = Path(__file__).with_name("mutation_check.py")
    if not script.is_file():
        return {"mutations_total": None, "mutations_killed": None}
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=dict(os.environ)
    )
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    try:
        last = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        print(f"mutation_check.py gave no JSON (rc {proc.returncode}): {proc.stderr[-500:]}")
        return {"mutations_total": None, "mutations_killed": None}
    return {k: last.get(k) for k in ("mutations_total", "mutations_killed")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("results/bench_shortcuts"))
    ap.add_argument("--reuse-cache", type=Path, default=None, help="copy this run's cache")
    ap.add_argument("--fresh", action="store_true", help="delete the run directory first")
    ap.add_argument("--no-mutations", action="store_true", help="skip mutation_check.py")
    ap.add_argument("--set", nargs="*", default=[], help="extra config overrides key=value")
    ap.add_argument("--stages", default="cache,sample,explain,score", help="pipeline stages to run")
    ap.add_argument("--latents", type=int, default=None, help="score latents 0..N-1 only")
    args = ap.parse_args()
    run = args.run_dir
    if args.fresh:
        shutil.rmtree(run, ignore_errors=True)
    if args.reuse_cache is not None:
        copy_cache(args.reuse_cache, run)
    overrides = {**demo_config(run), "score.scorers": SCORERS}
    for kv in args.set:
        key, value = kv.split("=", 1)
        overrides[key] = json.loads(value) if value[:1] in "[{0123456789-" else value
    cfg = load_config(None, overrides)
    t0 = time.perf_counter()
    latents = range(args.latents) if args.latents else None
    run_pipeline(cfg, stages=args.stages.split(","), latents=latents, progress=False)
    seconds = time.perf_counter() - t0

    audit = audit_summary(run, SCORERS)
    own = summarize(run, SCORERS)
    out: dict[str, object] = {}
    for name in AUDITED:
        a = audit.filter(pl.col("scorer") == name)
        if a.is_empty():
            continue
        single = a.filter(pl.col("cue") != CEILING).sort("mean", descending=True)
        ceiling = a.filter(pl.col("cue") == CEILING)["mean"][0]
        metric = "accuracy" if name == "intruder" else "balanced_accuracy"
        judge = own.filter((pl.col("scorer") == name) & (pl.col("metric") == metric))
        print(
            f"\n{name}: judge's own {metric} {judge['mean'][0]:.3f} (chance "
            f"{judge['chance'][0]:.3f}, {judge['scored'][0]} latents)"
        )
        print(f"  {'cue':<26} {'mean BA':>8}  95% CI          latents")
        for r in [*ceiling_rows(a), *single.iter_rows(named=True)]:
            print(
                f"  {r['cue']:<26} {r['mean']:>8.3f}  [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"
                f"  {r['latents']}"
            )
        out[f"{name}_cue_ceiling"] = round(float(ceiling), 4)
        out[f"{name}_max_single_cue"] = round(float(single["mean"][0]), 4)
        out[f"{name}_max_single_cue_name"] = single["cue"][0]
        out[f"{name}_judge_{metric}"] = round(float(judge["mean"][0]), 4)
    print()
    for line in format_audit(audit):
        print(line)
    out["pipeline_seconds"] = round(seconds, 1)
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    if not args.no_mutations:
        out.update(mutations())
    else:
        out.update({"mutations_total": None, "mutations_killed": None})
    print(json.dumps(out))


def ceiling_rows(a: pl.DataFrame) -> list[dict[str, object]]:
    return list(a.filter(pl.col("cue") == CEILING).iter_rows(named=True))


if __name__ == "__main__":
    main()
