"""Explain stage: explainers turn a latent's train examples into explanations."""

from autointerp.explainers.config import ExplainConfig

__all__ = ["ExplainConfig"]
