"""`autointerp cache`: SAE activations -> sparse Parquet shards."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    ConfigOpt,
    RayOpt,
    RunDirOpt,
    app,
    fail,
    model_stage_errors,
    one_line,
    ray_overrides,
    resolve_config,
    setup_logging,
)


@app.command()
def cache(
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    model: str | None = typer.Option(None, "--model", help="subject model: hub id or folder"),
    sae: str | None = typer.Option(None, "--sae", help="sparse coder: hub id or folder"),
    hookpoint: list[str] | None = typer.Option(
        None, "--hookpoint", help="module path, repeatable (model.layers.1, ...mlp:input)"
    ),
    dataset: str | None = typer.Option(
        None, "--dataset", help="'stdlib', a .txt/.jsonl/.parquet file or folder, or a hub name"
    ),
    split: str | None = typer.Option(None, "--split", help="dataset split"),
    text_column: str | None = typer.Option(None, "--text-column", help="column holding text"),
    n_tokens: int | None = typer.Option(None, "--n-tokens", help="tokens to cache"),
    ctx_len: int | None = typer.Option(None, "--ctx-len", help="tokens per window"),
    batch_size: int | None = typer.Option(None, "--batch-size", help="windows per forward"),
    max_memory_gb: float | None = typer.Option(
        None, "--max-memory-gb", help="memory budget of the stage (default 4)"
    ),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu, cuda"),
    local_files_only: bool | None = typer.Option(
        None, "--local-files-only/--allow-download", help="never download model files"
    ),
    ray: str | None = RayOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="hide the progress bar"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Cache the coder's sparse activations over the dataset (streaming, resumable)."""
    from autointerp.cache import cache_activations

    setup_logging(verbose)
    cfg = resolve_config(
        config,
        {
            "run_dir": run_dir,
            "subject.model": model,
            "subject.device": device,
            "subject.local_files_only": local_files_only,
            "coder.path": sae,
            "cache.hookpoints": hookpoint or None,
            "dataset.source": dataset,
            "dataset.split": split,
            "dataset.text_column": text_column,
            "cache.n_tokens": n_tokens,
            "cache.ctx_len": ctx_len,
            "cache.batch_size": batch_size,
            "cache.max_memory_gb": max_memory_gb,
            **ray_overrides(ray),
        },
    )
    try:
        folders = cache_activations(cfg, progress=not no_progress)
    except model_stage_errors() as exc:
        fail(one_line(exc))
        return
    for spec, folder in folders.items():
        typer.echo(f"{spec}: {folder}")
