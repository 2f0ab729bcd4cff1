"""LLM stage: one async interface over vLLM, OpenAI-compatible APIs and a lexical baseline."""

from autointerp.llm.client import LLMClient, create_client, run_requests
from autointerp.llm.config import LLMConfig
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse, SamplingParams

__all__ = [
    "ChatMessage",
    "LLMClient",
    "LLMConfig",
    "LLMRequest",
    "LLMResponse",
    "SamplingParams",
    "create_client",
    "run_requests",
]
