"""Explainers by name (the ``explain.explainer`` setting)."""

from __future__ import annotations

from autointerp.explainers.base import ExplainContext, Explainer
from autointerp.explainers.best_of_k import BestOfKExplainer
from autointerp.explainers.default import (
    ContrastiveExplainer,
    DefaultExplainer,
    TokenListExplainer,
)
from autointerp.explainers.iterative import IterativeExplainer
from autointerp.explainers.output import OutputExplainer

EXPLAINERS: dict[str, type[Explainer]] = {
    cls.name: cls
    for cls in (
        DefaultExplainer,
        ContrastiveExplainer,
        TokenListExplainer,
        BestOfKExplainer,
        IterativeExplainer,
        OutputExplainer,
    )
}


def make_explainer(ctx: ExplainContext) -> Explainer:
    name = ctx.config.explainer
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explainer {name!r}: pick one of {sorted(EXPLAINERS)}")
    return EXPLAINERS[name](ctx)
