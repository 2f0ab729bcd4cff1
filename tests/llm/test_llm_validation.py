"""Answers are validated before they are cached: a parsed answer that fails its task's check is
asked again within ``llm.json_attempts``, becomes an error if it stays bad and is never cached;
``refresh_before`` (``--force``) asks again; the endpoint is part of the cache key."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest
from fake_server import Action, FakeServer
from llm_helpers import fast_config

from autointerp.explainers.parse import check_explanation
from autointerp.llm.cache import ResponseCache, merge_shards
from autointerp.llm.client import create_client
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse
from autointerp.scorers.judge import Item, request

pytestmark = pytest.mark.timeout(60)
GOOD = '{"answers": [1, 0]}'


def judge_request() -> LLMRequest:
    """A two-window detection request with the scorer's own check (two 0/1 answers)."""
    items = [Item(text=t, tokens=[t], truth=i == 0, meta={}) for i, t in enumerate("ab")]
    return request("judge_system", "detection_user", "letters", items, {}, 64, False, {"latent": 1})


def explain_request() -> LLMRequest:
    return LLMRequest(
        messages=[ChatMessage(role="user", content="explain")],
        json_schema={"type": "object", "required": ["explanation"]},
        check=check_explanation,
    )


async def _ask(config, reqs, run_dir):  # noqa: ANN001, ANN202
    async with create_client(config, run_dir) as client:
        return [await client.generate(r) for r in reqs]


def _rows(run_dir: Path) -> int:
    with sqlite3.connect(run_dir / "llm_cache.sqlite") as conn:
        return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


@pytest.mark.parametrize(
    "bad", ['{"answers": [1]}', '{"answers": [1, "maybe"]}', '{"answers": []}']
)
def test_a_bad_judge_answer_is_asked_again_then_cached_once_good(
    server: FakeServer, api_key: str, tmp_path: Path, bad: str
) -> None:
    server.script(Action(text=bad), Action(text=GOOD))
    (resp,) = asyncio.run(_ask(fast_config(server), [judge_request()], tmp_path))
    assert server.hits == 2 and resp.ok and resp.parsed == {"answers": [1, 0]}
    assert resp.attempts == 2
    (again,) = asyncio.run(_ask(fast_config(server), [judge_request()], tmp_path))
    assert server.hits == 2 and again.cached and again.parsed == {"answers": [1, 0]}


def test_an_answer_that_stays_bad_is_an_error_and_never_cached(
    server: FakeServer, api_key: str, tmp_path: Path
) -> None:
    server.script(*[Action(text='{"explanation": "  "}')] * 3)
    (resp,) = asyncio.run(_ask(fast_config(server), [explain_request()], tmp_path))
    assert server.hits == 3  # llm.json_attempts
    assert resp.error == "invalid answer: empty explanation"
    assert _rows(tmp_path) == 0
    server.script(Action(text='{"explanation": "the letter a"}'))
    (resp,) = asyncio.run(_ask(fast_config(server), [explain_request()], tmp_path))
    assert server.hits == 4 and resp.ok and not resp.cached  # asked again on the next run
    assert _rows(tmp_path) == 1


def test_a_bad_answer_cached_by_an_older_version_is_asked_again(
    server: FakeServer, api_key: str, tmp_path: Path
) -> None:
    cfg = fast_config(server)
    req = judge_request()
    key = req.cache_key("openai", "gpt-4o-mini", cfg.endpoint)
    cache = ResponseCache(tmp_path / "llm_cache.sqlite")
    cache.put(key, LLMResponse(text='{"answers": [1]}', parsed={"answers": [1]}))
    cache.close()
    server.script(Action(text=GOOD))
    (resp,) = asyncio.run(_ask(cfg, [req], tmp_path))
    assert server.hits == 1 and resp.ok and not resp.cached
    (again,) = asyncio.run(_ask(cfg, [req], tmp_path))  # the good answer replaced it
    assert server.hits == 1 and again.cached and again.parsed == {"answers": [1, 0]}


def test_refresh_before_asks_again_once_per_run(
    server: FakeServer, api_key: str, tmp_path: Path
) -> None:
    req = judge_request()
    server.script(Action(text=GOOD))
    asyncio.run(_ask(fast_config(server), [req], tmp_path))
    assert server.hits == 1
    forced = fast_config(server, refresh_before=time.time())
    server.script(Action(text='{"answers": [0, 0]}'))
    first, second = asyncio.run(_ask(forced, [req, req], tmp_path))
    # the old answer is not used; the new one serves the rest of the forced run
    assert server.hits == 2 and not first.cached and second.cached
    assert first.parsed == second.parsed == {"answers": [0, 0]}
    (later,) = asyncio.run(_ask(fast_config(server), [req], tmp_path))
    assert server.hits == 2 and later.parsed == {"answers": [0, 0]}  # overwritten


def test_a_forced_worker_shard_wins_over_the_main_file(tmp_path: Path) -> None:
    db = tmp_path / "llm_cache.sqlite"
    main = ResponseCache(db)
    main.put("k", LLMResponse(text="old"))
    main.close()
    time.sleep(0.01)
    dead = 2**22 + 12345  # no such process
    while True:
        try:
            os.kill(dead, 0)
            dead += 1
        except ProcessLookupError:
            break
        except PermissionError:
            dead += 1
    worker = ResponseCache(db, shard=f"w0-{dead}")
    worker.put("k", LLMResponse(text="new"))
    worker.close()
    assert merge_shards(db) == 1
    hit = ResponseCache(db).get("k")
    assert hit is not None and hit.text == "new"


def test_two_servers_with_one_model_name_do_not_share_answers(api_key: str, tmp_path: Path) -> None:
    a = FakeServer(responder=lambda body: '{"answers": [1, 1]}').start()
    b = FakeServer(responder=lambda body: '{"answers": [0, 0]}').start()
    try:
        (ra,) = asyncio.run(_ask(fast_config(a), [judge_request()], tmp_path))
        (rb,) = asyncio.run(_ask(fast_config(b), [judge_request()], tmp_path))
        assert a.hits == 1 and b.hits == 1 and not rb.cached
        assert ra.parsed == {"answers": [1, 1]} and rb.parsed == {"answers": [0, 0]}
        (again,) = asyncio.run(_ask(fast_config(a), [judge_request()], tmp_path))
        assert a.hits == 1 and again.cached and again.parsed == {"answers": [1, 1]}
    finally:
        a.stop()
        b.stop()


def test_a_prompt_logprob_answer_that_fails_its_check_is_not_asked_again(
    server: FakeServer, api_key: str, tmp_path: Path
) -> None:
    # simulation's answer is the prompt's logprobs: asking again recomputes the same ones
    # (a real Qwen2.5-Coder run spent 3 full prefills on each lost simulation prompt)
    req = LLMRequest(
        prompt="def f\t0\n",
        prompt_logprobs=2,
        check=lambda r: "no digit distribution at a token's placeholder",
    )
    (resp,) = asyncio.run(_ask(fast_config(server, json_attempts=3), [req], tmp_path))
    assert server.hits == 1
    assert resp.error == "invalid answer: no digit distribution at a token's placeholder"
    assert _rows(tmp_path) == 0
