"""Explainers by name (the ``explain.explainer`` setting)."""

from __future__ import annotations

from autointerp.explainers.base import ExplainContext, Explainer
from autointerp.runner.lazy import LazyRegistry

_E = "autointerp.explainers"
EXPLAINERS: LazyRegistry = LazyRegistry(
    {
        "default": f"{_E}.default:DefaultExplainer",
        "contrastive": f"{_E}.default:ContrastiveExplainer",
        "token-list": f"{_E}.default:TokenListExplainer",
        "best-of-k": f"{_E}.best_of_k:BestOfKExplainer",
        "iterative": f"{_E}.iterative:IterativeExplainer",
        "output": f"{_E}.output:OutputExplainer",
    }
)  # name -> Explainer class, imported on first use


def make_explainer(ctx: ExplainContext) -> Explainer:
    name = ctx.config.explainer
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}: pick one of {sorted(EXPLAINERS)}")
    return EXPLAINERS[name](ctx)  # type: ignore[no-any-return]
