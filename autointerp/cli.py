"""Command line: a thin layer over the stage functions (each callable from a notebook)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import typer

from autointerp.config import RunConfig, load_config

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Explain and score every latent of a sparse autoencoder or transcoder.",
)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file", exists=False)
RunDirOpt = typer.Option(None, "--run-dir", help="run directory (default results/demo)")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


def resolve_config(config: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Load the YAML file and CLI overrides; a bad value exits with a one-line error."""
    try:
        return load_config(config, overrides)
    except Exception as exc:  # pydantic.ValidationError, FileNotFoundError, yaml errors
        raise typer.BadParameter(_one_line(exc)) from None


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])


def fail(message: str) -> None:
    """Exit with a one-line error (exit code 2)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


# Stage commands are defined below, one section per stage.
