"""`autointerp demo`: the whole pipeline on the bundled model, SAE and text."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    BaseUrlOpt,
    LLMOpt,
    app,
    fail,
    one_line,
    resolve_config,
    setup_logging,
)

# latents a real LLM explains and scores when --latents is not given: one, so that
# Qwen2.5-Coder-1.5B-Instruct on 2 CPU cores finishes in about 10 minutes (README: two took
# ~16 minutes); the lexical baseline does all
REAL_LLM_LATENTS = "0:1"


def demo_latents(latents: str | None, llm: str | None) -> str | None:
    """The latents the demo explains: ``--latents`` when given, else every latent with the
    lexical baseline and the first few (``REAL_LLM_LATENTS``) with a real LLM."""
    if latents is not None or llm is None or llm == "lexical":
        return latents
    return REAL_LLM_LATENTS


@app.command()
def demo(
    run_dir: Path = typer.Option(Path("results/demo"), "--run-dir", help="run directory"),
    n_tokens: int = typer.Option(262_144, "--n-tokens", help="tokens of stdlib text to cache"),
    device: str | None = typer.Option(None, "--device", help="auto (CUDA when present), cpu"),
    latents: str | None = typer.Option(
        None,
        "--latents",
        help="latents to explain and score, e.g. 0:4 or 3,17 (default: all with the lexical "
        f"baseline, {REAL_LLM_LATENTS} with --llm)",
    ),
    scorers: str = typer.Option(
        "detection,fuzzing,simulation", "--scorers", help="comma list of scorers"
    ),
    llm: str | None = LLMOpt,
    base_url: str | None = BaseUrlOpt,
    no_progress: bool = typer.Option(False, "--no-progress", help="hide progress bars"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the pipeline on the bundled demo model + SAE over the Python standard library's source.

    cache -> sample -> explain -> score, with the offline lexical baseline as explainer and
    judge (labelled as such), or the LLM of --llm (e.g. vllm:qwen2.5-coder-1.5b-instruct after
    `autointerp models fetch qwen2.5-coder-1.5b-instruct`). Resumable: rerunning continues
    where it stopped.
    """
    from transformers import AutoTokenizer

    from autointerp.cli.score import print_summary
    from autointerp.pipeline import demo_config, run_pipeline
    from autointerp.preview import preview_explanations, preview_latents
    from autointerp.sampling.latents import parse_latents

    setup_logging(verbose)
    chosen = demo_latents(latents, llm)
    if chosen != latents:
        typer.echo(f"--llm {llm}: explaining and scoring latents {chosen} (--latents to change)")
    names = [s.strip() for s in scorers.split(",") if s.strip()]
    cfg = resolve_config(
        None,
        {
            **demo_config(run_dir),
            "cache.n_tokens": n_tokens,
            "subject.device": device,
            "score.scorers": names,
            **({"llm.model": llm} if llm else {}),
            **({"llm.base_url": base_url} if base_url else {}),
        },
    )
    try:
        out = run_pipeline(cfg, latents=parse_latents(chosen), progress=not no_progress)
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(one_line(exc))
        return
    tokenizer = AutoTokenizer.from_pretrained(cfg.subject.model, local_files_only=True)
    for path in out["sample"]:
        typer.echo(f"\nexamples: {path}")
        for line in preview_latents(path, tokenizer):
            typer.echo(line)
    typer.echo(f"\nexplanations: {out['explain']}")
    for line in preview_explanations(out["explain"]):
        typer.echo(line)
    judge = "lexical baseline judge" if cfg.llm.model == "lexical" else f"judge {cfg.llm.model}"
    typer.echo(f"\nscores ({judge}; chance = an uninformed judge on the same mix):")
    print_summary(run_dir, names)
    if out.get("report"):
        typer.echo(f"\nreport: {out['report']}")
    typer.echo(f"\nrun directory: {run_dir}")
