"""Throughput of the LLM client against the fake OpenAI-compatible server (not a timed test).

Starts tests/llm/fake_server.py in a separate process with a fixed latency, sends N chat
requests through ``LLMClient`` (real ``openai`` client, retries, limits, SQLite cache) at a
given concurrency, and prints as its LAST line one JSON object with ``requests``, ``seconds``,
``ideal_seconds`` (requests x latency / concurrency) and ``efficiency`` (ideal / actual).

    python scripts/bench_llm.py --requests 2000 --latency 0.1 --concurrency 64
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autointerp.llm.client import create_client
from autointerp.llm.config import LLMConfig
from autointerp.llm.types import ChatMessage, LLMRequest

SERVER = Path(__file__).resolve().parents[1] / "tests" / "llm" / "fake_server.py"
log = logging.getLogger("bench_llm")


def start_server(latency: float, *extra: str) -> tuple[subprocess.Popen[str], int]:
    """tests/llm/fake_server.py in its own process (``extra``: more of its arguments)."""
    proc = subprocess.Popen(
        [sys.executable, str(SERVER), "--latency", str(latency), *extra],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"fake server did not start: {line!r}")
    return proc, int(line.split()[1])


async def bench(args: argparse.Namespace, port: int, run_dir: str) -> dict[str, object]:
    os.environ.setdefault("BENCH_FAKE_KEY", "sk-bench")
    config = LLMConfig(
        model="openai:bench-model",
        base_url=f"http://127.0.0.1:{port}/v1",
        api_key_env="BENCH_FAKE_KEY",
        concurrency=args.concurrency,
        cache=not args.no_cache,
        http_client=args.http_client,
    )
    requests = [
        LLMRequest(messages=[ChatMessage(role="user", content=f"request {i}: explain latent")])
        for i in range(args.requests)
    ]
    async with create_client(config, run_dir) as client:
        # warm-up: open the connection pool (not timed)
        warm = [
            LLMRequest(messages=[ChatMessage(role="user", content=f"warm {i}")])
            for i in range(args.concurrency)
        ]
        await client.generate_many(warm, desc="warm-up")
        start, cpu0 = time.perf_counter(), time.process_time()
        results = await client.generate_many(requests, desc="bench")
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu0
    ideal = args.requests * args.latency / args.concurrency
    return {
        "requests": args.requests,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "errors": sum(not r.ok for r in results),
        "cache": not args.no_cache,
        "http_client": args.http_client,
        "seconds": round(seconds, 3),
        "ideal_seconds": round(ideal, 3),
        "efficiency": round(ideal / seconds, 4),
        "requests_per_s": round(args.requests / seconds, 1),
        "client_cpu_ms_per_request": round(1000 * cpu / args.requests, 3),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def _loop_factory(plain: bool):  # noqa: ANN202
    """uvloop when installed (a vllm dependency): the client is CPU-bound at this rate."""
    if plain:
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-cache", action="store_true", help="bench without the SQLite cache")
    parser.add_argument("--http-client", choices=["auto", "aiohttp", "httpx"], default="auto")
    parser.add_argument("--no-uvloop", action="store_true", help="plain asyncio event loop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    proc, port = start_server(args.latency)
    try:
        with (
            tempfile.TemporaryDirectory() as run_dir,
            asyncio.Runner(loop_factory=_loop_factory(args.no_uvloop)) as runner,
        ):
            result = runner.run(bench(args, port, run_dir))
            result["event_loop"] = type(runner.get_loop()).__module__.split(".")[0]
    finally:
        proc.terminate()
        proc.wait(10)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
