"""`autointerp estimate CONFIG`: requests, tokens, dollars and wall time of the LLM stages
before any request is sent (also `--dry-run` on run, explain, score and rescore)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import polars as pl
import typer

from autointerp.cli.common import (
    LatentsOpt,
    NoProgressOpt,
    SetOpt,
    VerboseOpt,
    app,
    fail,
    model_stage_errors,
    one_line,
    parse_sets,
    resolve_config,
    setup_logging,
)
from autointerp.config import RunConfig

DryRunOpt = typer.Option(
    False, "--dry-run", help="print what the LLM calls would cost (autointerp estimate); send none"
)


def print_estimate(
    run_dir: Path,
    cfg: RunConfig,
    stages: Sequence[str],
    *,
    hookpoints: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    scorers: Sequence[str] | None = None,
    explanations: pl.DataFrame | None = None,
    sample: int | None = None,
    as_json: bool = False,
    write_batch: Path | None = None,
) -> None:
    """Estimate, keep it in the run directory (``estimate.json``) and print it."""
    from autointerp.cost import estimate, format_estimate, save_estimate
    from autointerp.cost.budget import _usd, estimate_json

    est = estimate(
        run_dir,
        cfg,
        stages,
        hookpoints,
        latents,
        scorers,
        explanations,
        sample,
        write_batch=write_batch,
    )
    save_estimate(run_dir, est)
    if as_json:
        typer.echo(estimate_json(est))
        return
    for line in format_estimate(est):
        typer.echo(line)
    cap = cfg.llm.max_cost_usd
    if cap is not None:
        verdict = "exceeds" if est.total.cost_usd > cap else "is within"
        typer.echo(f"the estimate {verdict} llm.max_cost_usd=${_usd(cap)}")


@app.command()
def estimate(
    config: Path = typer.Argument(..., help="YAML config of the run (see configs/)"),
    run_dir: Path | None = typer.Option(None, "--run-dir", help="override run_dir"),
    stages: str = typer.Option("explain,score", "--stages", help="explain, score or both"),
    latents: str | None = LatentsOpt,
    sample: int | None = typer.Option(
        None, "--sample", help="latents run dry and extrapolated (default llm.estimate_latents)"
    ),
    as_json: bool = typer.Option(False, "--json", help="one JSON object instead of a table"),
    write_batch: Path | None = typer.Option(
        None,
        "--write-batch",
        help="also write every latent's requests to this Batch API JSONL (vllm run-batch "
        "input; one stage at a time: --stages explain, then score)",
    ),
    sets: list[str] | None = SetOpt,
    no_progress: bool = NoProgressOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """What explain and score will send and cost: requests, prompt and completion tokens,
    dollars (dated price table, llm.prices) and wall time, per stage and in total. The cache
    and sample stages run first when they have not (they call no LLM)."""
    from autointerp.sampling.latents import parse_latents

    setup_logging(verbose)
    overrides = {"run_dir": str(run_dir) if run_dir else None, **parse_sets(sets)}
    cfg = resolve_config(config, overrides)
    chosen = [s.strip() for s in stages.split(",") if s.strip()]
    try:
        prepare_examples(cfg, not no_progress)
        print_estimate(
            Path(cfg.run_dir),
            cfg,
            chosen,
            latents=parse_latents(latents),
            sample=sample,
            as_json=as_json,
            write_batch=write_batch,
        )
    except model_stage_errors() as exc:
        fail(one_line(exc))


def prepare_examples(cfg: RunConfig, progress: bool) -> None:
    """The free stages an estimate needs (cache, sample), when they have not run."""
    from autointerp.pipeline import run_pipeline
    from autointerp.runner.examples import example_hookpoints

    if not example_hookpoints(Path(cfg.run_dir)):
        run_pipeline(cfg, ["cache", "sample"], progress=progress)


@app.command("import-batch")
def import_batch(
    run_dir: Path = typer.Argument(..., help="run directory (its llm_cache.sqlite)"),
    outputs: Path = typer.Argument(..., help="output JSONL of vllm run-batch or a Batch API job"),
    inputs: Path = typer.Option(
        ..., "--inputs", "-i", help="the request JSONL (estimate --write-batch)"
    ),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML config file"),
    llm: str | None = typer.Option(None, "--llm", help="backend:model the stage will use"),
    verbose: bool = VerboseOpt,
) -> None:
    """Answers of an offline batch into the run's response cache: the stage run afterwards
    with the same llm.model finds them there and generates nothing again."""
    from autointerp.cli.common import run_config
    from autointerp.llm.batch.offline import import_results

    setup_logging(verbose)
    cfg = run_config(run_dir, config, {"llm.model": llm})
    for path in (outputs, inputs):
        if not path.is_file():
            fail(f"no file {path}: give the run-batch output and the --inputs JSONL")
    try:
        stored, failed = import_results(run_dir, cfg.llm, outputs, inputs)
    except (ValueError, KeyError) as exc:
        fail(f"{outputs} is not Batch API output JSONL: {one_line(exc)}")
        return
    typer.echo(f"{stored} answers imported into {run_dir / cfg.llm.cache_file} ({failed} failed)")
