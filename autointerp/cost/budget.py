"""The cost cap (``llm.max_cost_usd``), the estimate kept in the run directory, and how an
estimate reads on a terminal."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from autointerp.config import RunConfig
from autointerp.cost.estimate import Estimate, estimate
from autointerp.llm import dry

log = logging.getLogger(__name__)
ESTIMATE_FILE = "estimate.json"
_COVERED: list[bool] = []


class BudgetExceeded(ValueError):
    """The estimate of a run is above ``llm.max_cost_usd``."""


@contextlib.contextmanager
def covered() -> Iterator[None]:
    """Stages run inside were checked together already (the pipeline checks explain + score
    at once, before the first request): they do not estimate again."""
    _COVERED.append(True)
    try:
        yield
    finally:
        _COVERED.pop()


def save_estimate(run_dir: Path, est: Estimate) -> Path:
    path = Path(run_dir) / ESTIMATE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(est.model_dump_json(indent=1))
    return path


def check_budget(
    run_dir: str | Path,
    config: RunConfig,
    stages: Sequence[str],
    hookpoints: Sequence[str] | None = None,
    latents: Sequence[int] | None = None,
    scorers: Sequence[str] | None = None,
    explanations: pl.DataFrame | None = None,
) -> Estimate | None:
    """With ``llm.max_cost_usd`` set: estimate ``stages``, keep the estimate in the run
    directory, and raise :class:`BudgetExceeded` (one line naming the setting) when it is
    above the cap. Nothing is sent either way. A no-op inside a dry run or :func:`covered`."""
    cap = config.llm.max_cost_usd
    if cap is None or dry.active() is not None or _COVERED:
        return None
    est = estimate(run_dir, config, stages, hookpoints, latents, scorers, explanations)
    save_estimate(Path(run_dir), est)
    lo, hi = est.total.cost_usd_ci
    if est.total.cost_usd > cap:
        raise BudgetExceeded(
            f"estimated cost ${_usd(est.total.cost_usd)} (95% interval ${_usd(lo)}-${_usd(hi)}) "
            f"of {'+'.join(stages)} on {est.latents} latents with {est.model} exceeds "
            f"llm.max_cost_usd=${_usd(cap)}: raise llm.max_cost_usd, pick fewer latents "
            "(--latents) or a cheaper llm.model; `autointerp estimate` shows the breakdown"
        )
    log.info(
        "estimated cost $%.2f (95%% interval $%.2f-$%.2f) is within llm.max_cost_usd=$%.2f",
        est.total.cost_usd,
        lo,
        hi,
        cap,
    )
    return est


def estimated_for(run_dir: Path, stage: str) -> dict[str, Any] | None:
    """The saved estimate's figures for one stage of ``llm_usage.jsonl`` (``explain`` or
    ``score``: every scorer summed), or None."""
    path = Path(run_dir) / ESTIMATE_FILE
    if not path.is_file():
        return None
    est = Estimate.model_validate_json(path.read_text())
    parts = [v for k, v in est.stages.items() if k == stage or k.startswith(f"{stage}:")]
    if not parts:
        return None
    return {
        "estimated_requests": sum(p.requests for p in parts),
        "estimated_cached": sum(p.cached_requests for p in parts),
        "estimated_prompt_tokens": sum(p.prompt_tokens for p in parts),
        "estimated_completion_tokens": sum(p.completion_tokens for p in parts),
        "estimated_cost_usd": sum(p.cost_usd for p in parts),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _usd(x: float) -> str:
    return f"{x:,.2f}" if x >= 100 else f"{x:.4f}"


def format_estimate(est: Estimate) -> list[str]:
    """The estimate as terminal lines: one per stage, then the total."""
    price = (
        "free (a model on this machine)"
        if est.local
        else "NO PRICE (set llm.prices)"
        if est.price is None
        else f"${est.price.input:g} in / ${est.price.output:g} out per 1M tokens"
        f"{' (batch)' if est.batch else ''}, prices of {est.prices_as_of}"
    )
    lines = [
        f"estimate for {est.model}: {est.latents} latents "
        f"({est.latents_sampled} sampled and extrapolated)",
        f"tokens counted with {est.tokenizer}; {price}",
        f"{'stage':<22}{'requests':>10}{'cached':>9}{'prompt tok':>14}{'compl tok':>12}"
        f"{'USD':>12}{'wall':>9}",
    ]
    rows = [*est.stages.items(), ("total", est.total)]
    for name, s in rows:
        lines.append(
            f"{name:<22}{s.requests:>10,}{s.cached_requests:>9,}{s.prompt_tokens:>14,}"
            f"{s.completion_tokens:>12,}{_usd(s.cost_usd):>12}{_duration(s.wall_s):>9}"
        )
    lo, hi = est.total.cost_usd_ci
    lines.append(
        f"95% interval of the total: ${_usd(lo)}-${_usd(hi)}; completion tokens at most "
        f"{est.total.max_completion_tokens:,} (max_tokens); wall time: {est.wall_basis}"
    )
    return lines


def estimate_json(est: Estimate) -> str:
    return json.dumps(est.model_dump(mode="json"))
