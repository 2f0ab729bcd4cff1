"""What every command shares: the app, config resolution (YAML + run.yaml + CLI overrides,
validated once), logging, and one-line errors. Each command lives in its own module."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import typer

from autointerp.config import RunConfig, load_config

_RAY_ADDRESS = re.compile(r"^(auto|local|[a-z]+://\S+|[\w.-]+:\d+)$")


def normalize_ray(argv: list[str]) -> list[str]:
    """``--ray`` takes an optional ADDRESS (auto, local, ray://host:10001, host:6379): written
    alone, it becomes ``--ray=local`` (click options cannot have optional values)."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--ray":
            nxt = argv[i + 1] if i + 1 < len(argv) else ""
            if not _RAY_ADDRESS.match(nxt):
                out.append("--ray=local")
                continue
        out.append(arg)
    return out


class _App(typer.Typer):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        sys.argv[1:] = normalize_ray(sys.argv[1:])
        return super().__call__(*args, **kwargs)


app = _App(
    add_completion=False,
    no_args_is_help=True,
    help="Explain and score every latent of a sparse autoencoder or transcoder.",
)

ConfigOpt = typer.Option(None, "--config", "-c", help="YAML config file", exists=False)
RunDirOpt = typer.Option(None, "--run-dir", help="run directory (default results/demo)")


def setup_logging(verbose: bool) -> None:
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
        raise typer.BadParameter(one_line(exc)) from None


def one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return " ".join(line.strip() for line in text[:3])


def fail(message: str) -> None:
    """Exit with a one-line error (exit code 2)."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


LatentsOpt = typer.Option(
    None, "--latents", help="subset: 0:1000 (range), 1,2,3 (list) or @file.txt"
)
HookpointOpt = typer.Option(
    None, "--hookpoint", help="hookpoint to work on, repeatable (default: every sampled one)"
)
LLMOpt = typer.Option(
    None, "--llm", help="backend:model, e.g. vllm:Qwen/Qwen3-8B, openai:gpt-4o-mini, lexical"
)
BaseUrlOpt = typer.Option(None, "--base-url", help="OpenAI-compatible server URL")
RayOpt = typer.Option(
    None,
    "--ray",
    metavar="[ADDRESS]",
    help="run the stage's shards (cache: token ranges and merges; explain, score: latent "
    "ranges) as Ray tasks: alone, on a local Ray; with auto or ray://host:10001, on that "
    "cluster (run dir on a shared filesystem; docs/scale.md)",
)


def ray_overrides(ray: str | None) -> dict[str, Any]:
    """``--ray [ADDRESS]`` as config overrides (the ``execution`` section)."""
    if ray is None:
        return {}
    return {"execution.engine": "ray", "execution.ray_address": None if ray == "local" else ray}


NoProgressOpt = typer.Option(False, "--no-progress", help="hide the progress bar")
VerboseOpt = typer.Option(False, "--verbose", "-v")


def run_config(run_dir: Path, config: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """A stage's config: ``--config`` if given, else the run's ``run.yaml``, then the
    overrides (dotted keys; ``None`` values are ignored), with ``run_dir`` set."""
    run_yaml = Path(run_dir) / "run.yaml"
    source = config if config is not None else (run_yaml if run_yaml.is_file() else None)
    return resolve_config(source, {"run_dir": str(run_dir), **overrides})


def stage_errors() -> tuple[type[Exception], ...]:
    """Errors a stage raises for bad input: shown as one line, exit code 2."""
    from autointerp.runner.lock import RunDirBusyError
    from autointerp.runner.procs import ShardFailedError

    return (FileNotFoundError, ValueError, ImportError, RunDirBusyError, ShardFailedError)


SetOpt = typer.Option(
    None,
    "--set",
    "-s",
    help="any config field as dotted.key=value (repeatable), e.g. -s llm.concurrency=64 "
    "-s score.scorers=[detection,fuzzing]; values are parsed as YAML",
)


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    """``["a.b=1", "c=[x, y]"]`` -> ``{"a.b": 1, "c": ["x", "y"]}`` (values parsed as YAML):
    the one way every config field becomes a command-line override."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--set {item!r}: write dotted.key=value")
        out[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return out


def model_stage_errors() -> tuple[type[Exception], ...]:
    """stage_errors plus what loading a model, coder, hookpoint or dataset raises (stages
    that run the subject model: cache, run); imported here, lazily, as those pull in torch."""
    from autointerp.cache import CacheError
    from autointerp.coders.base import CoderLoadError, CoderShapeError
    from autointerp.data.dataset import DatasetError
    from autointerp.subject.hookpoints import UnknownHookpointError
    from autointerp.subject.model import SubjectLoadError

    return (
        *stage_errors(),
        CacheError,
        CoderLoadError,
        CoderShapeError,
        DatasetError,
        UnknownHookpointError,
        SubjectLoadError,
    )
