"""``run_pipeline``: cache -> sample -> explain -> score (-> report) from one config.

Every stage is resumable on its own (finished chunks, latent ranges, explanations and scores
are skipped; failed rows are retried; LLM answers come from the response cache), so killing a
run anywhere and running it again continues where it stopped and repeats no finished LLM call.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from autointerp.config import RunConfig, save_config

log = logging.getLogger(__name__)
STAGES = ("cache", "sample", "explain", "score", "report")


def demo_config(run_dir: str | Path = "results/demo") -> dict[str, Any]:
    """Overrides of the bundled demo (the same as configs/demo.yaml): the demo model + SAE
    over the stdlib text, the offline lexical baseline as explainer and judge."""
    return {
        "run_dir": str(run_dir),
        "cache.hookpoints": ["model.layers.1"],
        "cache.n_tokens": 262_144,
        "llm.model": "lexical",
        "explain.explainer": "default",
        "score.scorers": ["detection", "fuzzing", "simulation"],
    }


def check_stages(stages: Sequence[str] | None) -> list[str]:
    chosen = list(stages or STAGES)
    unknown = [s for s in chosen if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}: pick from {', '.join(STAGES)}")
    return [s for s in STAGES if s in chosen]  # always in pipeline order


def run_pipeline(
    config: RunConfig,
    stages: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the chosen stages (default: all) in order; returns what each produced. One
    process at a time per run directory (runner/lock.py)."""
    from autointerp.runner.lock import run_lock

    with run_lock(config.run_dir, "run"):
        return _run_stages(config, stages, latents, progress)


def _run_stages(
    config: RunConfig,
    stages: Sequence[str] | None,
    latents: Sequence[int] | None,
    progress: bool,
) -> dict[str, Any]:
    from autointerp.cache import cache_activations
    from autointerp.explainers.run import explain
    from autointerp.sampling.build import build_examples
    from autointerp.scorers.run import score

    chosen = check_stages(stages)
    run_dir = Path(config.run_dir)
    out: dict[str, Any] = {}
    save_config(config)
    if "cache" in chosen:
        log.info("stage cache")
        out["cache"] = cache_activations(config, progress=progress)
    if "sample" in chosen:
        log.info("stage sample")
        out["sample"] = build_examples(run_dir, config, progress=progress)
    llm_stages = [s for s in ("explain", "score") if s in chosen]
    with contextlib.ExitStack() as checked:
        if llm_stages and config.llm.max_cost_usd is not None:
            from autointerp.cost.budget import check_budget, covered

            check_budget(run_dir, config, llm_stages, latents=latents)  # before any request
            checked.enter_context(covered())
        if "explain" in chosen:
            log.info("stage explain")
            out["explain"] = explain(run_dir, config, latents=latents, progress=progress)
        # with a report to follow, the score stage's shortcut audit is written by the report
        # in a second process, beside its detail files (the two are mostly one-core work)
        audit = None
        if "score" in chosen:
            log.info("stage score")
            later = "report" in chosen and _report_stage() is not None
            out["score"] = score(
                run_dir, config, latents=latents, progress=progress, audit=not later
            )
            if later:
                from autointerp.scorers.run import audit_seed

                audit = (list(config.score.scorers), audit_seed(config))
    if "report" in chosen:
        out["report"] = _report(run_dir, audit)
    return out


def _report_stage() -> Any:
    """``build_report``, or None where the report stage is not installed."""
    try:
        from autointerp.report import build_report
    except ImportError:  # the report stage is optional until it is installed
        return None
    return build_report


def _report(run_dir: Path, audit: tuple[list[str], int] | None = None) -> Path | None:
    build_report = _report_stage()
    if build_report is None:
        log.warning("no report stage in this installation; skipped")
        if audit is not None:  # the audit the score stage left to the report
            from autointerp.scorers.audit import run_audit

            run_audit(run_dir, audit[0], seed=audit[1])
        return None
    log.info("stage report")
    return build_report(run_dir, audit=audit)
