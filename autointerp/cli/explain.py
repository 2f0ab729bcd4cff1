"""`autointerp explain RUN_DIR`: explanations.parquet from the train windows."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    BaseUrlOpt,
    ConfigOpt,
    HookpointOpt,
    LatentsOpt,
    LLMOpt,
    NoProgressOpt,
    RayOpt,
    VerboseOpt,
    app,
    fail,
    one_line,
    ray_overrides,
    run_config,
    setup_logging,
    stage_errors,
)
from autointerp.cli.estimate import DryRunOpt


@app.command()
def explain(
    run_dir: Path = typer.Argument(..., help="run directory holding examples/"),
    config: Path | None = ConfigOpt,
    explainer: str | None = typer.Option(
        None, "--explainer", help="default, contrastive, token-list or best-of-k"
    ),
    llm: str | None = LLMOpt,
    base_url: str | None = BaseUrlOpt,
    hookpoint: list[str] | None = HookpointOpt,
    latents: str | None = LatentsOpt,
    k: int | None = typer.Option(None, "--k", help="best-of-k: candidates per latent"),
    reasoning: bool | None = typer.Option(
        None, "--reasoning/--no-reasoning", help="ask for short reasoning first"
    ),
    show_activations: bool | None = typer.Option(
        None, "--show-activations/--no-show-activations", help="list marked tokens' levels"
    ),
    force: bool = typer.Option(False, "--force", help="redo latents already explained"),
    ray: str | None = RayOpt,
    dry_run: bool = DryRunOpt,
    no_progress: bool = NoProgressOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Explain every latent from its train windows (resumable; no LLM call is paid twice)."""
    from autointerp.explainers.run import explain as run_explain
    from autointerp.sampling.latents import parse_latents

    setup_logging(verbose)
    cfg = run_config(
        run_dir,
        config,
        {
            "explain.explainer": explainer,
            "llm.model": llm,
            "llm.base_url": base_url,
            "explain.k": k,
            "explain.reasoning": reasoning,
            "explain.show_activations": show_activations,
            **ray_overrides(ray),
        },
    )
    if dry_run:
        from autointerp.cli.estimate import print_estimate

        try:
            print_estimate(
                run_dir, cfg, ["explain"], hookpoints=hookpoint, latents=parse_latents(latents)
            )
        except stage_errors() as exc:
            fail(one_line(exc))
        return
    try:
        path = run_explain(
            run_dir,
            cfg,
            hookpoints=hookpoint or None,
            latents=parse_latents(latents),
            force=force,
            progress=not no_progress,
        )
    except stage_errors() as exc:
        fail(one_line(exc))
        return
    typer.echo(str(path))
