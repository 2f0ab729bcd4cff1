"""Command line: a thin layer over the stage functions (each callable from a notebook).
One module per command; they share ``common`` (options, config resolution, errors)."""

from autointerp.cli import (  # noqa: F401 - importing registers each command on ``app``
    cache,
    calibrate,
    compare,
    demo,
    estimate,
    explain,
    llm,
    models,
    report,
    run,
    sample,
    score,
    search,
)
from autointerp.cli.common import app, resolve_config

__all__ = ["app", "resolve_config"]
