"""`autointerp report`: the run's static HTML report (opens from disk, no server)."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import typer

from autointerp.cli.common import VerboseOpt, app, fail, one_line, setup_logging, stage_errors


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="run directory"),
    out: Path | None = typer.Option(None, "--out", help="output folder (default RUN_DIR/report)"),
    examples: int = typer.Option(10, "--examples", help="activating windows shown per latent"),
    contrast: int = typer.Option(2, "--contrast", help="windows shown per contrast kind"),
    open_: bool = typer.Option(False, "--open", help="open the report in the web browser"),
    verbose: bool = VerboseOpt,
) -> None:
    """Summary, plots (PNG) and a latent browser as static HTML in RUN_DIR/report/."""
    from autointerp.report import build_report

    setup_logging(verbose)
    try:
        index = build_report(run_dir, out, n_activating=examples, n_contrast=contrast)
    except stage_errors() as exc:
        fail(one_line(exc))
        return
    typer.echo(str(index))
    if open_:
        webbrowser.open(index.resolve().as_uri())
