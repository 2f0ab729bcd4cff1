"""Sampling stage: activating and contrast example windows for every latent of a cache.

``build_examples`` is imported lazily so that loading the config models stays light.
"""

from __future__ import annotations

from typing import Any

from autointerp.sampling.config import SampleConfig, SplitMix

__all__ = ["SampleConfig", "SplitMix", "build_examples"]


def __getattr__(name: str) -> Any:
    if name == "build_examples":
        from autointerp.sampling.build import build_examples

        return build_examples
    raise AttributeError(name)
