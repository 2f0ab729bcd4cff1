"""`autointerp sample`: activating and contrast example windows."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    ConfigOpt,
    app,
    fail,
    one_line,
    resolve_config,
    setup_logging,
)


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="run directory holding cache/<hookpoint>/"),
    config: Path | None = ConfigOpt,
    hookpoint: list[str] | None = typer.Option(
        None, "--hookpoint", help="hookpoint to sample, repeatable (default: every cached one)"
    ),
    latents: str | None = typer.Option(
        None, "--latents", help="subset: 0:1000 (range), 1,2,3 (list) or @file.txt"
    ),
    seed: int | None = typer.Option(None, "--seed", help="seed of splits and random draws"),
    window_len: int | None = typer.Option(None, "--window-len", help="tokens per window"),
    placement: str | None = typer.Option(
        None, "--placement", help="'spread' (default), 'peak' or 'aligned'"
    ),
    min_activations: int | None = typer.Option(
        None, "--min-activations", help="latents firing fewer times get a skipped row"
    ),
    embedding_model: str | None = typer.Option(
        None, "--similar-embedding-model", help="HF model for embedding-based similar windows"
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="rebuild examples made with another sample config"
    ),
    no_progress: bool = typer.Option(False, "--no-progress", help="hide the progress bar"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Build activating and contrast example windows for every latent (resumable)."""
    from autointerp.sampling.build import build_examples
    from autointerp.sampling.latents import parse_latents

    setup_logging(verbose)
    run_yaml = run_dir / "run.yaml"
    cfg = resolve_config(
        config if config is not None else (run_yaml if run_yaml.is_file() else None),
        {
            "run_dir": str(run_dir),
            "sample.seed": seed,
            "sample.window_len": window_len,
            "sample.placement": placement,
            "sample.min_activations": min_activations,
            "sample.similar_embedding_model": embedding_model,
        },
    )
    try:
        subset = parse_latents(latents)
        paths = build_examples(
            run_dir,
            cfg,
            hookpoints=hookpoint or None,
            latents=subset,
            overwrite=overwrite,
            progress=not no_progress,
        )
    except (FileNotFoundError, ValueError, ImportError) as exc:
        fail(one_line(exc))
        return
    for path in paths:
        typer.echo(str(path))
