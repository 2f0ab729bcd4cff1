"""Scorers by name (``score.scorers`` / ``--scorers``) and the headline metrics of each."""

from __future__ import annotations

from autointerp.scorers.base import ScoreContext, Scorer
from autointerp.scorers.detection import DetectionScorer
from autointerp.scorers.embedding import EmbeddingScorer
from autointerp.scorers.fuzzing import FuzzingScorer
from autointerp.scorers.intervention import InterventionScorer
from autointerp.scorers.intruder import IntruderScorer
from autointerp.scorers.simulation import SimulationScorer
from autointerp.scorers.surprisal import SurprisalScorer

SCORERS: dict[str, type[Scorer]] = {
    cls.name: cls
    for cls in (
        DetectionScorer,
        FuzzingScorer,
        SimulationScorer,
        EmbeddingScorer,
        IntruderScorer,
        SurprisalScorer,
        InterventionScorer,
    )
}
HEADLINE: dict[str, tuple[str, ...]] = {
    "detection": ("balanced_accuracy", "auroc", "f1"),
    "fuzzing": ("balanced_accuracy", "auroc", "f1"),
    "simulation": ("pearson",),
    "embedding": ("auroc",),
    "intruder": ("accuracy",),
    "surprisal": ("auroc", "drop_activating"),
    "intervention": ("surprisal_score", "judge_accuracy"),
}


def check_scorers(
    names: list[str], backend: str, simulation_mode: str, surprisal_backend: str = "hf"
) -> list[str]:
    """Validate scorer names (and combinations a backend cannot do) before any work."""
    if not names:
        raise ValueError(f"no scorer given: pick from {sorted(SCORERS)}")
    unknown = [n for n in names if n not in SCORERS]
    if unknown:
        raise ValueError(f"unknown scorer(s) {unknown}: pick from {sorted(SCORERS)}")
    if "simulation" in names and simulation_mode == "logprobs" and backend == "lexical":
        raise ValueError(
            "simulation mode 'logprobs' needs prompt logprobs, which the lexical baseline does "
            "not give: set score.simulation.mode to json or auto"
        )
    if "surprisal" in names and surprisal_backend == "llm" and backend == "lexical":
        raise ValueError(
            "surprisal with score.surprisal.backend 'llm' needs prompt logprobs, which the "
            "lexical baseline does not give: set score.surprisal.backend to hf (a local LM) or "
            "use a vllm / vLLM-server llm.model"
        )
    return list(dict.fromkeys(names))


def make_scorer(name: str, ctx: ScoreContext) -> Scorer:
    return SCORERS[name](ctx)
