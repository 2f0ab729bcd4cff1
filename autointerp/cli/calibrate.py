"""`autointerp calibrate`: check a judge on planted features before a paid run."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    BaseUrlOpt,
    ConfigOpt,
    LLMOpt,
    NoProgressOpt,
    VerboseOpt,
    app,
    fail,
    one_line,
    resolve_config,
    setup_logging,
    stage_errors,
)


@app.command()
def calibrate(
    run_dir: Path = typer.Option(
        Path("results/calibrate"), "--run-dir", help="where the planted run is written"
    ),
    config: Path | None = ConfigOpt,
    llm: str | None = LLMOpt,
    base_url: str | None = BaseUrlOpt,
    scorers: str | None = typer.Option(None, "--scorers", help="comma list (default: config)"),
    n_tokens: int = typer.Option(131_072, "--n-tokens", help="tokens of Python source cached"),
    latents: str | None = typer.Option(
        None, "--latents", help="planted latents to score, e.g. 0:6 (default: all 16)"
    ),
    no_progress: bool = NoProgressOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """How well each scorer, with this judge, tells true explanations of planted latents from
    shuffled ones (AUROC over latents; token and context latents apart)."""
    from autointerp.calibrate import calibrate as run_calibrate
    from autointerp.calibrate import format_calibration

    setup_logging(verbose)
    cfg = resolve_config(config, {"llm.model": llm, "llm.base_url": base_url})
    names = [s.strip() for s in scorers.split(",") if s.strip()] if scorers else None
    try:
        from autointerp.sampling.latents import parse_latents

        table = run_calibrate(
            cfg, run_dir, names, n_tokens, progress=not no_progress, latents=parse_latents(latents)
        )
    except stage_errors() as exc:
        fail(one_line(exc))
        return
    for line in format_calibration(table):
        typer.echo(line)
    typer.echo(f"\n{run_dir / 'calibration.parquet'}")
