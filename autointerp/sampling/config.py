"""Configuration of example construction (the ``sample`` section of ``run.yaml``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ACTIVATING_SAMPLERS = ("topk", "quantile", "uniform")
CONTRAST_SOURCES = ("random", "similar", "neighbour")
SPLITS = ("train", "selection", "test")


class SplitMix(BaseModel):
    """How many windows of each sampler/source one split gets, per latent."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    topk: int = Field(0, ge=0, description="activating: highest max activation first")
    quantile: int = Field(0, ge=0, description="activating: equal number per quantile bin")
    uniform: int = Field(0, ge=0, description="activating: uniform over firing windows")
    random: int = Field(0, ge=0, description="contrast: random windows where it never fires")
    similar: int = Field(0, ge=0, description="contrast: look like activating ones, yet silent")
    neighbour: int = Field(0, ge=0, description="contrast: top windows of decoder neighbours")

    @property
    def n_activating(self) -> int:
        return self.topk + self.quantile + self.uniform

    @property
    def n_contrast(self) -> int:
        return self.random + self.similar + self.neighbour


class SampleConfig(BaseModel):
    """Which example windows are built for every latent (see docs/examples.md)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    window_len: int = Field(32, ge=1, description="tokens per example window (<= ctx_len)")
    placement: Literal["spread", "peak", "aligned"] = Field(
        "spread",
        description="'spread': one window per sequence holding its max at a seeded random "
        "place (the peak's position tells a judge nothing); 'peak': its max at peak_offset; "
        "'aligned': the sequence cut into fixed blocks of window_len",
    )
    peak_offset: int | None = Field(
        None,
        ge=0,
        description="'peak' placement: index of the peak inside the window (default 3/4 of "
        "window_len)",
    )
    min_activations: int = Field(
        10, ge=1, description="latents firing fewer times get a 'skipped' row instead"
    )
    n_quantiles: int = Field(10, ge=1, description="bins of the quantile sampler")
    split_fractions: tuple[float, float, float] = Field(
        (0.4, 0.2, 0.4),
        description="share of sequences in train/selection/test (by a seeded hash of seq_id)",
    )
    train: SplitMix = Field(
        default_factory=lambda: SplitMix(topk=10, quantile=10, random=5, similar=5, neighbour=5)
    )
    selection: SplitMix = Field(
        default_factory=lambda: SplitMix(quantile=10, random=4, similar=3, neighbour=3)
    )
    test: SplitMix = Field(
        # 100 test windows: 50 activating (5 per quantile bin) + 50 contrast
        default_factory=lambda: SplitMix(quantile=50, random=20, similar=15, neighbour=15)
    )
    n_neighbours: int = Field(10, ge=1, description="decoder neighbours per latent (cosine)")
    neighbour_windows: int = Field(10, ge=1, description="top windows kept per neighbour")
    neighbour_chunk: int = Field(4096, ge=1, description="rows per chunk of the cosine matmul")
    similar_tokens: int = Field(5, ge=1, description="characteristic tokens per latent")
    similar_embedding_model: str | None = Field(
        None,
        description="HF model (id or dir): pick 'similar' windows by mean-pooled hidden-state "
        "embedding instead of characteristic tokens",
    )
    embedding_batch_size: int = Field(64, ge=1)
    embedding_device: str = "cpu"
    oversample: float = Field(
        4.0, ge=1.0, description="contrast candidates drawn per needed window (then filtered)"
    )
    seed: int | None = Field(None, description="default: the run's seed")

    @model_validator(mode="after")
    def _check(self) -> SampleConfig:
        if self.peak_offset is not None and self.peak_offset >= self.window_len:
            raise ValueError(
                f"peak_offset={self.peak_offset} must be < window_len={self.window_len}"
            )
        fr = self.split_fractions
        if min(fr) < 0 or abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions {fr} must be >= 0 and sum to 1")
        for name in SPLITS:
            mix: SplitMix = getattr(self, name)
            if (mix.n_activating or mix.n_contrast) and fr[SPLITS.index(name)] == 0:
                raise ValueError(f"split '{name}' asks for examples but its fraction is 0")
        return self

    @property
    def offset(self) -> int:
        """Peak index inside a window under 'peak' placement."""
        return self.peak_offset if self.peak_offset is not None else (3 * self.window_len) // 4

    def mix(self, split: str) -> SplitMix:
        return getattr(self, split)
