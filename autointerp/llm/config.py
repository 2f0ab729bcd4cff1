"""Configuration of LLM backends (placeholder until the LLM stage lands)."""

from pydantic import BaseModel, ConfigDict


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
