"""`autointerp score RUN_DIR` and `autointerp rescore RUN_DIR --explanations FILE`."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    BaseUrlOpt,
    ConfigOpt,
    HookpointOpt,
    LatentsOpt,
    LLMOpt,
    NoProgressOpt,
    RayOpt,
    RunConfig,
    VerboseOpt,
    app,
    fail,
    one_line,
    ray_overrides,
    run_config,
    setup_logging,
    stage_errors,
)
from autointerp.cli.estimate import DryRunOpt

ScorersOpt = typer.Option(
    None,
    "--scorers",
    help="comma list of detection, fuzzing, simulation, embedding, intruder, surprisal "
    "(default: config)",
)
ForceOpt = typer.Option(False, "--force", help="score again what is already scored")
ControlOpt = typer.Option(
    None,
    "--control",
    help="also run a random baseline beside the run, repeatable: random-coder (same-shape "
    "coder, random weights), random-model (re-initialised subject model); see docs/score.md",
)


def _overrides(llm: str | None, base_url: str | None, ray: str | None) -> dict[str, object]:
    return {"llm.model": llm, "llm.base_url": base_url, **ray_overrides(ray)}


def _scorer_list(scorers: str | None) -> list[str] | None:
    return [s.strip() for s in scorers.split(",") if s.strip()] if scorers else None


def judge_line(run_dir: Path, cfg: RunConfig, llm: str | None, config: Path | None) -> str:
    """The one line ``score``/``rescore`` print at start: which judge, and where it came from
    (``--llm``, ``--config``, or run.yaml, which ``explain`` updates with the model it used)."""
    from autointerp.runner.provenance import read_stage

    c = cfg.llm
    where = (
        "--llm"
        if llm
        else f"--config {config}"
        if config is not None
        else "run.yaml"
        if (Path(run_dir) / "run.yaml").is_file()
        else "the defaults"
    )
    line = f"judge: {c.model}" + (f" at {c.endpoint}" if c.endpoint else "") + f" (from {where})"
    if c.backend == "lexical":
        line += ", the offline lexical baseline"
    explained = read_stage(run_dir, "explain")
    wrote = (explained or {}).get("explainer_llm", {}).get("model")
    if wrote and wrote != c.model:
        line += f"; the last explain stage used {wrote}"
    return line


def print_summary(run_dir: Path, names: list[str] | None) -> None:
    from autointerp.scorers.audit_summary import audit_summary, format_audit
    from autointerp.scorers.summary import format_summary, summarize

    for line in format_summary(summarize(run_dir, names)):
        typer.echo(line)
    for line in format_audit(audit_summary(run_dir, names)):
        typer.echo(line)


@app.command()
def score(
    run_dir: Path = typer.Argument(..., help="run directory holding explanations.parquet"),
    config: Path | None = ConfigOpt,
    scorers: str | None = ScorersOpt,
    llm: str | None = LLMOpt,
    base_url: str | None = BaseUrlOpt,
    hookpoint: list[str] | None = HookpointOpt,
    latents: str | None = LatentsOpt,
    force: bool = ForceOpt,
    control: list[str] | None = ControlOpt,
    ray: str | None = RayOpt,
    dry_run: bool = DryRunOpt,
    no_progress: bool = NoProgressOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Score the explanations on the test split; print the summary with chance levels (and
    each control's mean with ``--control``)."""
    from autointerp.sampling.latents import parse_latents
    from autointerp.scorers.run import score as run_score

    setup_logging(verbose)
    cfg = run_config(run_dir, config, _overrides(llm, base_url, ray))
    typer.echo(judge_line(run_dir, cfg, llm, config))
    names = _scorer_list(scorers)
    from autointerp.controls import CONTROLS

    bad = [c for c in control or [] if c not in CONTROLS]
    if bad:
        fail(f"unknown --control {bad[0]!r}: pick {' or '.join(CONTROLS)}")
    if dry_run:
        from autointerp.cli.estimate import print_estimate

        try:
            print_estimate(
                run_dir,
                cfg,
                ["score"],
                hookpoints=hookpoint,
                latents=parse_latents(latents),
                scorers=names,
            )
        except stage_errors() as exc:
            fail(one_line(exc))
        return
    try:
        paths = run_score(
            run_dir,
            cfg,
            scorers=names,
            hookpoints=hookpoint or None,
            latents=parse_latents(latents),
            force=force,
            progress=not no_progress,
        )
        for kind in control or []:
            from autointerp.controls import run_control

            paths.update(
                {
                    f"{kind}:{k}": v
                    for k, v in run_control(
                        run_dir, cfg, kind, scorers=names, progress=not no_progress
                    ).items()
                }
            )
    except stage_errors() as exc:
        fail(one_line(exc))
        return
    for path in paths.values():
        typer.echo(str(path))
    print_summary(run_dir, names)


@app.command()
def rescore(
    run_dir: Path = typer.Argument(..., help="run directory holding examples/"),
    explanations: Path = typer.Option(
        ...,
        "--explanations",
        "-e",
        help="explanations.parquet (any run), a CSV/JSON/JSONL/Parquet table, or a delphi "
        "explanations/ folder",
    ),
    latent_column: str | None = typer.Option(
        None, "--latent-column", help="column of latent indices (default: latent, index, ...)"
    ),
    explanation_column: str | None = typer.Option(
        None, "--explanation-column", help="column of texts (default: explanation, description)"
    ),
    hookpoint_column: str | None = typer.Option(None, "--hookpoint-column"),
    hookpoint: str | None = typer.Option(
        None, "--hookpoint", help="hookpoint of every row (default: the run's only one)"
    ),
    config: Path | None = ConfigOpt,
    scorers: str | None = ScorersOpt,
    llm: str | None = LLMOpt,
    base_url: str | None = BaseUrlOpt,
    force: bool = ForceOpt,
    ray: str | None = RayOpt,
    dry_run: bool = DryRunOpt,
    no_progress: bool = NoProgressOpt,
    verbose: bool = VerboseOpt,
) -> None:
    """Score explanations from any source (another run, Neuronpedia, delphi) on this run's
    test windows; what is already scored for the same text and scorer config is skipped."""
    from autointerp.scorers.rescore import rescore as run_rescore

    setup_logging(verbose)
    cfg = run_config(run_dir, config, _overrides(llm, base_url, ray))
    typer.echo(judge_line(run_dir, cfg, llm, config))
    names = _scorer_list(scorers)
    if dry_run:
        from autointerp.cli.estimate import print_estimate
        from autointerp.runner.examples import require_examples
        from autointerp.scorers.rescore import load_external

        try:
            expl = load_external(
                explanations,
                require_examples(run_dir, None),
                latent_column,
                explanation_column,
                hookpoint_column,
                hookpoint,
            )
            print_estimate(run_dir, cfg, ["score"], scorers=names, explanations=expl)
        except stage_errors() as exc:
            fail(one_line(exc))
        return
    try:
        paths = run_rescore(
            run_dir,
            cfg,
            explanations,
            scorers=names,
            latent_column=latent_column,
            explanation_column=explanation_column,
            hookpoint_column=hookpoint_column,
            hookpoint=hookpoint,
            force=force,
            progress=not no_progress,
        )
    except stage_errors() as exc:
        fail(one_line(exc))
        return
    for path in paths.values():
        typer.echo(str(path))
    print_summary(run_dir, names)
