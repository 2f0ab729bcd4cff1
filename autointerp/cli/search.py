"""`autointerp search RUN_DIR "QUERY"`: the latents whose explanations are nearest to a query."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import VerboseOpt, app, fail, one_line, setup_logging, stage_errors
from autointerp.embedding import DEFAULT_MODEL


@app.command()
def search(
    run_dir: Path = typer.Argument(..., help="run directory holding explanations.parquet"),
    query: str = typer.Argument(..., help="what the latents should be about, in words"),
    run: list[Path] | None = typer.Option(
        None, "--run", help="another run to search too, repeatable (e.g. every layer)"
    ),
    k: int = typer.Option(20, "--k", min=1, help="results to show"),
    model: str = typer.Option(
        DEFAULT_MODEL, "--model", help="sentence-transformers hub id or local folder"
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="also write the results (.parquet or .csv)"
    ),
    verbose: bool = VerboseOpt,
) -> None:
    """Semantic search over explanations (embedded once per run and stored), with scores."""
    from autointerp.search import ROW_COLUMNS
    from autointerp.search import search as run_search

    setup_logging(verbose)
    try:
        hits = run_search([run_dir, *(run or [])], query, k=k, model=model, device=device)
    except stage_errors() as exc:
        fail(one_line(exc))
        return
    if output is not None:
        if output.suffix == ".csv":
            hits.write_csv(output)
        else:
            hits.write_parquet(output)
    scores = [c for c in hits.columns if c not in ("rank", "similarity", *ROW_COLUMNS)]
    multi = hits["run"].n_unique() > 1
    for r in hits.iter_rows(named=True):
        where = f"{r['run']} " if multi else ""
        shown = " ".join(
            f"{c}={r[c]:.3f}" for c in scores if isinstance(r[c], float) and r[c] == r[c]
        )
        typer.echo(
            f"{r['rank']:>3} {r['similarity']:.3f} {where}{r['hookpoint']}:{r['latent']} "
            f"{r['explanation']}" + (f"  [{shown}]" if shown else "")
        )
