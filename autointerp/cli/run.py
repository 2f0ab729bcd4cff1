"""`autointerp run CONFIG.yaml`: the whole pipeline from one config file."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    NoProgressOpt,
    RayOpt,
    SetOpt,
    VerboseOpt,
    app,
    fail,
    model_stage_errors,
    one_line,
    parse_sets,
    ray_overrides,
    resolve_config,
    setup_logging,
)
from autointerp.cli.estimate import DryRunOpt


@app.command()
def run(
    config: Path = typer.Argument(..., help="YAML config (see configs/)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="override run_dir"),
    stages: str | None = typer.Option(
        None, "--stages", help="comma list of cache,sample,explain,score,report (default: all)"
    ),
    latents: str | None = typer.Option(
        None, "--latents", help="explain/score only these: 0:1000, 1,2,3 or @file.txt"
    ),
    sets: list[str] | None = SetOpt,
    ray: str | None = RayOpt,
    dry_run: bool = DryRunOpt,
    no_progress: bool = NoProgressOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """cache -> sample -> explain -> score -> report. Kill it anywhere and run it again: it
    continues, and no finished LLM call is repeated."""
    from autointerp.pipeline import run_pipeline
    from autointerp.sampling.latents import parse_latents

    setup_logging(verbose)
    overrides = {
        "run_dir": str(run_dir) if run_dir else None,
        **parse_sets(sets),
        **ray_overrides(ray),
    }
    cfg = resolve_config(config, overrides)
    chosen = [s.strip() for s in stages.split(",") if s.strip()] if stages else None
    if dry_run:  # cache + sample if never run (no LLM), then the LLM stages' estimate
        from autointerp.cli.estimate import prepare_examples, print_estimate
        from autointerp.pipeline import check_stages

        try:
            picked = check_stages(chosen)
            prepare_examples(cfg, not no_progress)
            llm_stages = [s for s in picked if s in ("explain", "score")]
            print_estimate(cfg.run_dir, cfg, llm_stages, latents=parse_latents(latents))
        except model_stage_errors() as exc:
            fail(one_line(exc))
        return
    try:
        out = run_pipeline(cfg, chosen, parse_latents(latents), progress=not no_progress)
    except model_stage_errors() as exc:
        fail(one_line(exc))
        return
    from autointerp.cli.score import print_summary

    if "score" in out:
        print_summary(cfg.run_dir, None)
    if out.get("report"):
        typer.echo(f"report: {out['report']}")
    typer.echo(f"run directory: {cfg.run_dir}")
