"""Requests/s of autointerp's in-process vLLM backend on a GPU with a tiny random Llama.

Builds a random Llama (hidden 256, 4 heads: head dim 64; the byte-level BPE tokenizer of
tests/conftest.py ``build_tiny_llama``), sends N chat requests (plus N/4 with a JSON schema)
through ``create_client`` with ``llm.model = vllm:<dir>``, prints one JSON line last.

    python scripts/bench_vllm_gpu.py [--requests 512] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)
SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "boolean"}},
    "required": ["label"],
    "additionalProperties": False,
}


def build_tiny_llama(path: Path, hidden: int = 256) -> Path:
    """tests/conftest.py's builder (head dim 64 at hidden 256), loaded by path."""
    import importlib.util

    conftest = Path(__file__).resolve().parents[1] / "tests" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tests_conftest", conftest)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_tiny_llama(path, hidden=hidden)


def main() -> None:
    from autointerp.llm.client import create_client
    from autointerp.llm.config import LLMConfig
    from autointerp.llm.types import ChatMessage, LLMRequest, SamplingParams

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=512)
    p.add_argument("--max-tokens", type=int, default=32)
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_vllm_"))
    model = build_tiny_llama(work / "llama")
    config = LLMConfig.model_validate(
        {
            "model": f"vllm:{model}",
            "cache": False,
            "concurrency": 1024,
            "vllm": {
                "max_model_len": 256,
                "gpu_memory_utilization": 0.5,
                "chat_template": CHAT_TEMPLATE,
            },
        }
    )
    sp = SamplingParams(max_tokens=args.max_tokens)
    plain = [
        LLMRequest(
            messages=[ChatMessage(role="user", content=f"def f{i}(x): return x")], sampling=sp
        )
        for i in range(args.requests)
    ]
    structured = [
        LLMRequest(
            messages=[ChatMessage(role="user", content=f"the fox {i}")],
            sampling=sp,
            json_schema=SCHEMA,
        )
        for i in range(max(1, args.requests // 4))
    ]

    async def run() -> dict[str, object]:
        async with create_client(config, work) as client:
            t0 = time.perf_counter()
            warm = await client.generate_many(plain[:8])  # engine start + compile
            startup = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = await client.generate_many(plain)
            plain_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            out_s = await client.generate_many(structured)
            struct_s = time.perf_counter() - t0
        ok = sum(r.ok for r in out)
        gen_tokens = sum(r.completion_tokens or 0 for r in out)
        return {
            "startup_s": round(startup, 2),
            "warm_ok": sum(r.ok for r in warm),
            "requests": len(out),
            "ok": ok,
            "first_error": next((r.error for r in out + out_s if not r.ok), None),
            "requests_per_s": round(len(out) / plain_s, 1),
            "gen_tokens_per_s": round(gen_tokens / plain_s, 1),
            "structured_requests": len(out_s),
            "structured_ok": sum(r.ok for r in out_s),
            "structured_requests_per_s": round(len(out_s) / struct_s, 1),
        }

    print(json.dumps(asyncio.run(run())))


if __name__ == "__main__":
    main()
