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


# --- cache -------------------------------------------------------------------------------


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
    no_progress: bool = typer.Option(False, "--no-progress", help="hide the progress bar"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Cache the coder's sparse activations over the dataset (streaming, resumable)."""
    from autointerp.cache import CacheError, cache_activations
    from autointerp.coders.base import CoderLoadError, CoderShapeError
    from autointerp.data.dataset import DatasetError
    from autointerp.subject.hookpoints import UnknownHookpointError
    from autointerp.subject.model import SubjectLoadError

    _setup_logging(verbose)
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
        },
    )
    errors = (
        CacheError,
        CoderLoadError,
        CoderShapeError,
        DatasetError,
        UnknownHookpointError,
        SubjectLoadError,
        FileNotFoundError,
        ValueError,
    )
    try:
        folders = cache_activations(cfg, progress=not no_progress)
    except errors as exc:
        fail(_one_line(exc))
        return
    for spec, folder in folders.items():
        typer.echo(f"{spec}: {folder}")


# --- sample ------------------------------------------------------------------------------


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
    placement: str | None = typer.Option(None, "--placement", help="'peak' or 'aligned'"),
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

    _setup_logging(verbose)
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
        fail(_one_line(exc))
        return
    for path in paths:
        typer.echo(str(path))


# --- llm ---------------------------------------------------------------------------------


@app.command()
def llm(
    prompt: str = typer.Argument(..., help="a user message to send"),
    config: Path | None = ConfigOpt,
    run_dir: Path | None = RunDirOpt,
    model: str | None = typer.Option(
        None,
        "--llm",
        help="backend:model, e.g. vllm:Qwen/Qwen3-8B, openai:gpt-4o-mini, openrouter:..., lexical",
    ),
    base_url: str | None = typer.Option(None, "--base-url", help="OpenAI-compatible server URL"),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Send one message to the configured LLM backend: check keys and servers before a long run.

    The answer goes through the same client the stages use (retries, limits, response cache
    in RUN_DIR/llm_cache.sqlite), and its token counts, latency and cost are printed.
    """
    import asyncio

    from autointerp.llm import ChatMessage, LLMRequest, create_client
    from autointerp.llm.types import SamplingParams

    _setup_logging(verbose)
    cfg = resolve_config(config, {"run_dir": run_dir, "llm.model": model, "llm.base_url": base_url})
    request = LLMRequest(
        messages=[ChatMessage(role="user", content=prompt)],
        sampling=SamplingParams(max_tokens=max_tokens),
    )

    async def _ask():
        async with create_client(cfg.llm, cfg.run_dir) as client:
            return await client.generate(request)

    try:
        response = asyncio.run(_ask())
    except (ValueError, ImportError) as exc:
        fail(_one_line(exc))
        return
    if not response.ok:
        fail(f"{cfg.llm.model}: {response.error}")
    typer.echo(response.text)
    typer.secho(
        f"[{cfg.llm.model}] prompt {response.prompt_tokens} + completion "
        f"{response.completion_tokens} tokens, {response.latency_s:.2f} s, "
        f"${response.cost_usd:.6f}{' (cached)' if response.cached else ''}",
        err=True,
        fg=typer.colors.BRIGHT_BLACK,
    )


# --- demo --------------------------------------------------------------------------------


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("results/demo"), "--run-dir", help="run directory"),
    n_tokens: int = typer.Option(262_144, "--n-tokens", help="tokens of stdlib text to cache"),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu"),
    no_progress: bool = typer.Option(False, "--no-progress", help="hide progress bars"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the pipeline on the bundled demo model + SAE over the Python standard library's source.

    Offline and resumable: rerunning continues where a killed run stopped.
    """
    from transformers import AutoTokenizer

    from autointerp.cache import cache_activations
    from autointerp.preview import preview_latents
    from autointerp.sampling.build import build_examples

    _setup_logging(verbose)
    cfg = resolve_config(
        None, {"run_dir": str(run_dir), "cache.n_tokens": n_tokens, "subject.device": device}
    )
    try:
        cache_activations(cfg, progress=not no_progress)
        paths = build_examples(run_dir, cfg, progress=not no_progress)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(_one_line(exc))
        return
    tokenizer = AutoTokenizer.from_pretrained(cfg.subject.model, local_files_only=True)
    for path in paths:
        typer.echo(f"\nexamples: {path}")
        for line in preview_latents(path, tokenizer):
            typer.echo(line)
    typer.echo(f"\nrun directory: {run_dir}")
