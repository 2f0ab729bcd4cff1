"""Configuration of the explain stage (the ``explain`` section of ``run.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ExplainerName = Literal["default", "contrastive", "token-list", "best-of-k", "iterative", "output"]


class ExplainConfig(BaseModel):
    """Which explainer writes ``explanations.parquet`` and what its prompt shows."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    explainer: ExplainerName = "default"
    n_examples: int = Field(20, ge=1, description="train activating windows shown (top first)")
    n_contrast: int = Field(10, ge=0, description="contrastive: silent look-alike windows shown")
    highlight_threshold: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="mark tokens whose activation is at least this fraction of the latent's "
        "max (at the 0..10 resolution of activations_norm; 0 marks every firing token)",
    )
    context_before: int | None = Field(
        15,
        ge=0,
        description="explain prompts show each window from this many tokens before its peak "
        "(its max; null: from the window's start)",
    )
    context_after: int | None = Field(
        4,
        ge=0,
        description="... to this many tokens after its peak (null: to the window's end)",
    )
    show_activations: bool = Field(
        False, description="after the excerpts, list each marked token with its 0..10 level"
    )
    reasoning: bool = Field(False, description="ask for short reasoning before the explanation")
    max_tokens: int = Field(200, gt=0, description="completion budget (x4 with reasoning)")
    temperature: float = Field(0.0, ge=0.0)
    top_tokens: int = Field(5, ge=1, description="token-list baseline: tokens listed")
    k: int = Field(5, ge=1, description="best-of-k: candidates per latent")
    k_base: Literal["default", "contrastive"] = Field(
        "default", description="best-of-k: the explainer whose prompt writes the candidates"
    )
    k_temperature: float = Field(0.7, gt=0.0, description="best-of-k: sampling temperature")
    iter_rounds: int = Field(3, ge=1, description="iterative: rounds, the first included")
    iter_max_false_positives: int = Field(
        5, ge=0, description="iterative: judge's false positives shown per revision"
    )
    iter_max_false_negatives: int = Field(
        5, ge=0, description="iterative: judge's false negatives shown per revision"
    )
    output_with_examples: bool = Field(
        False, description="output: show the activating windows beside the output views"
    )
    iter_holdout: int = Field(
        12,
        ge=2,
        description="iterative: train windows held back from the explainer to score each round "
        "(half activating, half contrast; at most half of each kind)",
    )

    def used_by(self, explainer: str) -> dict[str, object]:
        """The fields an explainer's output depends on (its config hash covers only these)."""
        prompt = [
            "n_examples",
            "context_before",
            "context_after",
            "highlight_threshold",
            "show_activations",
            "reasoning",
            "max_tokens",
        ]
        fields = {
            "default": [*prompt, "temperature"],
            "contrastive": [*prompt, "temperature", "n_contrast"],
            "token-list": [
                "n_examples",
                "context_before",
                "context_after",
                "n_contrast",
                "top_tokens",
            ],
            "best-of-k": [*prompt, "k", "k_base", "k_temperature"]
            + (["n_contrast"] if self.k_base == "contrastive" else []),
            "output": ["top_tokens", "temperature", "max_tokens", "output_with_examples"]
            + (["n_examples", "highlight_threshold"] if self.output_with_examples else []),
            "iterative": [
                *prompt,
                "temperature",
                "iter_rounds",
                "iter_max_false_positives",
                "iter_max_false_negatives",
                "iter_holdout",
            ],
        }[explainer]
        return {"explainer": explainer, **{f: getattr(self, f) for f in fields}}
