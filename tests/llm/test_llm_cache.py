"""Response cache: no double payment, errors not cached, survives kill -9; the key never leaks."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fake_server import Action, FakeServer
from llm_helpers import fast_config

from autointerp.config import RunConfig
from autointerp.llm.cache import ResponseCache
from autointerp.llm.client import create_client
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse, SamplingParams

pytestmark = pytest.mark.timeout(60)


def chat(text: str, **kw: object) -> LLMRequest:
    return LLMRequest(messages=[ChatMessage(role="user", content=text)], **kw)


async def _many(config, reqs, run_dir):  # noqa: ANN001, ANN202
    async with create_client(config, run_dir) as client:
        return await client.generate_many(reqs), client.usage.total


def test_cache_prevents_repeated_calls(server: FakeServer, api_key: str, tmp_path: Path) -> None:
    reqs = [chat(f"q{i}") for i in range(10)]
    first, u1 = asyncio.run(_many(fast_config(server), reqs, tmp_path))
    assert server.hits == 10 and u1.cost_usd > 0
    second, u2 = asyncio.run(_many(fast_config(server), reqs + [reqs[0]], tmp_path))
    assert server.hits == 10  # a rerun pays nothing
    assert all(r.cached for r in second) and [r.text for r in second[:10]] == [
        r.text for r in first
    ]
    assert (
        u2.cached == 11
        and u2.cost_usd == 0
        and u2.saved_usd == pytest.approx(u1.cost_usd + first[0].cost_usd)
    )


def test_cache_key_depends_on_parameters(server: FakeServer, api_key: str, tmp_path: Path) -> None:
    base = chat("same")
    variants = [
        base,
        chat("same", sampling=SamplingParams(temperature=0.7)),
        chat("same", logprobs=3),
        chat("same", json_schema={"type": "object"}),
        chat("same", tags={"latent": 5}),  # tags are not part of the key
    ]
    server.script(*[Action(text="{}")] * 5)
    asyncio.run(_many(fast_config(server), variants, tmp_path))
    assert server.hits == 4
    assert base.cache_key("openai", "a") != base.cache_key("openai", "b")
    assert base.cache_key("openai", "a") != base.cache_key("openrouter", "a")


def test_errors_are_not_cached(server: FakeServer, api_key: str, tmp_path: Path) -> None:
    server.script(Action(status=400))
    (r1,), _ = asyncio.run(_many(fast_config(server), [chat("x")], tmp_path))
    (r2,), _ = asyncio.run(_many(fast_config(server), [chat("x")], tmp_path))
    assert not r1.ok and r2.ok and not r2.cached and server.hits == 2


_WRITER = """
import sys, time
from autointerp.llm.cache import ResponseCache
from autointerp.llm.types import LLMResponse
cache = ResponseCache(sys.argv[1])
i = 0
while True:
    cache.put(f"key{i}", LLMResponse(text="x" * 2000 + str(i), backend="b", model="m"))
    print(i, flush=True)
    i += 1
"""


def test_cache_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "llm_cache.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(db)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acknowledged = -1
    deadline = time.monotonic() + 20
    while acknowledged < 300 and time.monotonic() < deadline:
        acknowledged = int(proc.stdout.readline())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    cache = ResponseCache(db)
    assert len(cache) >= acknowledged + 1  # every put that returned is there
    hit = cache.get(f"key{acknowledged}")
    assert hit is not None and hit.text.endswith(str(acknowledged))


def test_cache_roundtrip_keeps_infinite_logprobs(tmp_path: Path) -> None:
    from autointerp.llm.types import TokenLogprob, TopLogprob

    cache = ResponseCache(tmp_path / "c.sqlite")
    resp = LLMResponse(
        text="a",
        logprobs=[
            TokenLogprob(
                token="a", logprob=-1.0, top=[TopLogprob(token="b", logprob=float("-inf"))]
            )
        ],
    )
    cache.put("k", resp)
    assert cache.get("k").logprobs[0].top[0].logprob == float("-inf")


def test_key_never_leaks(
    server: FakeServer, api_key: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The server echoes the Authorization header in its error body: the client must redact it.
    boom = Action(status=500, body=f'{{"error": {{"message": "boom {api_key}"}}}}')
    server.script(
        Action(status=401, body=f'{{"error": {{"message": "bad key Bearer {api_key}"}}}}'),
        *[boom] * 8,  # the two other requests exhaust their 4 attempts each
    )
    config = fast_config(server, max_attempts=4)
    results, _ = asyncio.run(_many(config, [chat("a"), chat("b"), chat("c")], tmp_path))
    assert sum(not r.ok for r in results) == 3 and server.hits == 9
    errors = [r.error for r in results if r.error]
    assert all(api_key not in e and "***" in e for e in errors)
    assert api_key not in caplog.text

    # run.yaml is the model_dump of the config: it names the variable, never the key.
    run_config = RunConfig(run_dir=tmp_path, llm=config)
    dumped = yaml.safe_dump(run_config.model_dump(mode="json"))
    assert "FAKE_LLM_KEY" in dumped and api_key not in dumped
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert api_key.encode() not in path.read_bytes(), path
    for r in results:
        assert api_key not in r.model_dump_json()


def test_worker_shards_are_merged_into_the_main_file(tmp_path: Path) -> None:
    db = tmp_path / "llm_cache.sqlite"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    worker = ResponseCache(db, shard=f"w0-{dead}")
    worker.put("k1", LLMResponse(text="one", backend="b", model="m"))
    assert worker.get("k1").text == "one"  # a worker reads its own writes
    worker.close()
    shard = tmp_path / f"llm_cache.w0-{dead}.sqlite"
    assert shard.is_file()
    alive = ResponseCache(db, shard=f"w1-{os.getpid()}")  # a running worker's shard stays
    alive.put("k2", LLMResponse(text="two", backend="b", model="m"))
    main = ResponseCache(db)  # opening the main file merges ended workers' shards
    assert main.get("k1").text == "one" and main.get("k2") is None
    assert not shard.exists()
    alive.close()
    main.close()


def _open_at(path: Path, shard: str, start: float) -> None:
    while time.time() < start:  # every process opens the new file at the same instant
        pass
    cache = ResponseCache(path, shard=f"{shard}-{os.getpid()}")
    cache.put(shard, LLMResponse(text=shard, backend="b", model="m"))
    cache.close()


def test_workers_creating_the_cache_together_all_open_it(tmp_path: Path) -> None:
    # SQLite refuses "PRAGMA journal_mode=WAL" at once, without its busy timeout, while
    # another process switches the same new file: before the fix 12 of 120 such opens failed
    ctx = multiprocessing.get_context("fork")
    for trial in range(20):
        db = tmp_path / str(trial) / "llm_cache.sqlite"
        db.parent.mkdir()
        start = time.time() + 0.1
        procs = [ctx.Process(target=_open_at, args=(db, f"w{i}", start)) for i in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0, 0, 0], f"trial {trial}"
        main = ResponseCache(db)  # merges the four shards
        keys = sorted(r[0] for r in main._conn.execute("SELECT key FROM responses"))
        main.close()
        assert keys == ["w0", "w1", "w2", "w3"]
