"""Configuration of example construction (placeholder until the sampling stage lands)."""

from pydantic import BaseModel, ConfigDict


class SampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
