"""Scorers by name (``score.scorers`` / ``--scorers``) and the headline metrics of each."""

from __future__ import annotations

from autointerp.runner.lazy import LazyRegistry
from autointerp.scorers.base import ScoreContext, Scorer

_S = "autointerp.scorers"
SCORERS: LazyRegistry = LazyRegistry(
    {
        "detection": f"{_S}.detection:DetectionScorer",
        "fuzzing": f"{_S}.fuzzing:FuzzingScorer",
        "simulation": f"{_S}.simulation:SimulationScorer",
        "embedding": f"{_S}.embedding:EmbeddingScorer",
        "intruder": f"{_S}.intruder:IntruderScorer",
        "surprisal": f"{_S}.surprisal:SurprisalScorer",
        "intervention": f"{_S}.intervention:InterventionScorer",
    }
)  # name -> Scorer class, imported on first use
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
