"""`autointerp compare RUN_A RUN_B`: match latents of two runs and compare explanations."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import VerboseOpt, app, fail, one_line, setup_logging, stage_errors


@app.command()
def compare(
    run_a: Path = typer.Argument(..., help="run directory A"),
    run_b: Path = typer.Argument(..., help="run directory B (may be A, with other hookpoints)"),
    hookpoint_a: str | None = typer.Option(None, "--hookpoint-a", help="default: the only one"),
    hookpoint_b: str | None = typer.Option(
        None, "--hookpoint-b", help="default: A's, or the only one"
    ),
    by: str = typer.Option("auto", "--by", help="auto, decoder or activation"),
    threshold: float = typer.Option(0.5, "--threshold", help="orphan below this best match"),
    budget_mb: float = typer.Option(
        512.0, "--budget-mb", help="memory for a dense n x m matrix (optimal assignment)"
    ),
    embedding: str = typer.Option(
        "all-MiniLM-L6-v2", "--embedding", help="sentence-transformers hub id, folder, or tfidf"
    ),
    explainer: str | None = typer.Option(None, "--explainer", help="only this explainer's rows"),
    random_pairs: int = typer.Option(10_000, "--random-pairs", help="pairs of the baseline"),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(
        None, "--out", help="output folder (default <parent of A>/compare/<a>__<b>)"
    ),
    verbose: bool = VerboseOpt,
) -> None:
    """Match latents (decoder cosine or activation correlation), compare the explanations of
    matched pairs against random pairs, and list the orphans of each side."""
    from pydantic import ValidationError

    from autointerp.compare import CompareConfig, compare_runs
    from autointerp.compare.report import render
    from autointerp.embedding import EmbeddingError

    setup_logging(verbose)
    try:
        cfg = CompareConfig(
            by=by,
            threshold=threshold,
            budget_mb=budget_mb,
            embedding_model=embedding,
            explainer=explainer,
            random_pairs=random_pairs,
            seed=seed,
        )
        result = compare_runs(run_a, run_b, hookpoint_a, hookpoint_b, out, cfg)
    except (*stage_errors(), ValidationError, EmbeddingError) as exc:
        fail(one_line(exc))
        return
    typer.echo(render(result.summary))
    typer.echo(f"\n{result.out_dir}")
