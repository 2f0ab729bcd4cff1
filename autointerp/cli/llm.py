"""`autointerp llm`: one message through the configured backend."""

from __future__ import annotations

from pathlib import Path

import typer

from autointerp.cli.common import (
    ConfigOpt,
    RunDirOpt,
    app,
    fail,
    one_line,
    resolve_config,
    setup_logging,
)


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

    setup_logging(verbose)
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
        fail(one_line(exc))
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
