"""The Batch API backend against the fake batch server: jobs that complete, fail, expire and
partially fail; chunking under the enqueued-token limit; a killed process resuming its jobs;
answers cached as live ones (never paid twice)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from fake_server import FakeServer
from llm_helpers import SECRET, fast_config

from autointerp.llm.client import LLMClient, create_client
from autointerp.llm.types import ChatMessage, LLMRequest


def _config(server: FakeServer, **batch: object):  # type: ignore[no-untyped-def]
    return fast_config(
        server,
        batch={"enabled": True, "poll_interval_s": 0.02, "flush_idle_s": 0.05, **batch},
    )


def _requests(n: int) -> list[LLMRequest]:
    return [
        LLMRequest(messages=[ChatMessage(role="user", content=f"question number {i}")])
        for i in range(n)
    ]


def _answer(r: LLMRequest) -> str:
    return "answer to: " + r.messages[-1].content  # type: ignore[index]


async def _run(client: LLMClient, reqs: list[LLMRequest]):  # type: ignore[no-untyped-def]
    try:
        return await client.generate_many(reqs)
    finally:
        await client.aclose()


def _paths(server: FakeServer) -> list[str]:
    return [r["path"].split("?")[0] for r in server.requests]


def test_batch_completes_and_matches_live(server: FakeServer, api_key: str, tmp_path: Path):
    reqs = _requests(7)
    cfg = _config(server)
    out = asyncio.run(_run(create_client(cfg, tmp_path), reqs))
    assert [r.text for r in out] == [_answer(r) for r in reqs]
    assert all(r.ok and r.prompt_tokens > 0 for r in out)
    # one job: one upload, one create; no live chat request
    assert _paths(server).count("/v1/batches") == 1
    assert "/v1/chat/completions" not in _paths(server)
    assert server.batch.lines_submitted == 7
    # the JSONL sent is OpenAI's batch format, custom ids = the response-cache keys
    lines = [json.loads(x) for x in server.batch.files["file-1"].splitlines()]
    keys = [r.cache_key("openai", "gpt-4o-mini", cfg.endpoint) for r in reqs]
    assert cfg.endpoint and cfg.endpoint.startswith("http://127.0.0.1")
    assert sorted(line["custom_id"] for line in lines) == sorted(keys)
    assert {line["url"] for line in lines} == {"/v1/chat/completions"}
    # the batch price (half of gpt-4o-mini's live 0.15 / 0.60 per 1M tokens)
    r = out[0]
    assert r.cost_usd == pytest.approx((r.prompt_tokens * 0.075 + r.completion_tokens * 0.30) / 1e6)
    # a rerun is served from the response cache: nothing new sent
    hits = server.hits
    again = asyncio.run(_run(create_client(_config(server), tmp_path), reqs))
    assert [r.text for r in again] == [r.text for r in out] and all(r.cached for r in again)
    assert server.hits == hits
    assert SECRET not in (tmp_path / "batches" / "jobs.jsonl").read_text()


def test_chunks_respect_the_enqueued_token_limit(server: FakeServer, api_key: str, tmp_path):
    reqs = _requests(6)
    tok = reqs[0].approx_prompt_tokens()
    cfg = _config(server, max_enqueued_tokens=2 * tok)  # two requests' worth at once
    out = asyncio.run(_run(create_client(cfg, tmp_path), reqs))
    assert all(r.ok for r in out)
    jobs = list(server.batch.jobs.values())
    assert len(jobs) == 3
    sizes = [len(server.batch.files[j["input_file_id"]].splitlines()) for j in jobs]
    assert sizes == [2, 2, 2]
    # each job was created only after the one before it had ended (queue room)
    order = [(r["path"].split("?")[0]) for r in server.requests]
    creates = [i for i, p in enumerate(order) if p == "/v1/batches"]
    polls = [i for i, p in enumerate(order) if p.startswith("/v1/batches/")]
    assert all(any(creates[k] < p < creates[k + 1] for p in polls) for k in range(2))


@pytest.mark.parametrize("plan", ["fail", "expire", "partial"])
def test_failed_expired_partial_jobs_resubmit_only_what_is_missing(
    plan: str, server: FakeServer, api_key: str, tmp_path: Path
):
    server.batch.script(plan)  # the first job misbehaves, the next ones complete
    reqs = _requests(6)
    out = asyncio.run(_run(create_client(_config(server), tmp_path), reqs))
    if plan == "fail":  # a job failing validation is not retried: every request fails
        assert all(not r.ok and "scripted failure" in (r.error or "") for r in out)
        assert server.batch.lines_submitted == 6
        return
    assert [r.text for r in out] == [_answer(r) for r in reqs]
    # the three answered lines are used; only the three missing ones are sent again
    assert server.batch.lines_submitted == 9
    assert len(server.batch.jobs) == 2


def test_killed_process_resumes_polling(server: FakeServer, api_key: str, tmp_path: Path):
    server.batch.polls = 1000  # the job does not end while the first process lives
    reqs = _requests(5)

    async def killed() -> None:
        client = create_client(_config(server), tmp_path)
        task = asyncio.ensure_future(client.generate_many(reqs))
        while not server.batch.jobs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()  # the process dies with its job in flight
        await client.backend.aclose()

    asyncio.run(killed())
    assert len(server.batch.jobs) == 1
    server.batch.polls_left["batch_1"] = 1
    client = create_client(_config(server), tmp_path)
    out = asyncio.run(_run(client, reqs))
    assert [r.text for r in out] == [_answer(r) for r in reqs]
    assert len(server.batch.jobs) == 1 and server.batch.lines_submitted == 5
    assert client.backend.submitted_requests == 0  # type: ignore[attr-defined]


def test_job_created_but_not_recorded_is_found_by_metadata(
    server: FakeServer, api_key: str, tmp_path: Path
):
    """A kill between creating the job and recording its id: the rerun lists the jobs and
    adopts the one whose metadata names the chunk."""
    reqs = _requests(3)
    out = asyncio.run(_run(create_client(_config(server), tmp_path), reqs))
    manifest = tmp_path / "batches" / "jobs.jsonl"
    first = manifest.read_text().splitlines()[0]  # the 'writing' record only
    assert json.loads(first)["state"] == "writing"
    manifest.write_text(first + "\n")
    (tmp_path / "llm_cache.sqlite").unlink()
    for extra in ("-wal", "-shm"):
        Path(f"{tmp_path / 'llm_cache.sqlite'}{extra}").unlink(missing_ok=True)
    again = asyncio.run(_run(create_client(_config(server), tmp_path), reqs))
    assert [r.text for r in again] == [r.text for r in out]
    assert len(server.batch.jobs) == 1 and server.batch.lines_submitted == 3


def test_batch_needs_an_api_backend() -> None:
    from autointerp.llm.config import LLMConfig

    with pytest.raises(ValueError, match="llm.batch.enabled needs an openai or openrouter"):
        LLMConfig(model="vllm:some/model", batch={"enabled": True})


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.timeout(600)
def test_vllm_run_batch_accepts_our_lines() -> None:
    """vLLM's run-batch validates each input line with BatchRequestInput: ours pass, with
    the JSON schema, logprobs and sampling carried over."""
    pytest.importorskip("vllm")
    from vllm.entrypoints.launchers.run_batch import BatchRequestInput

    from autointerp.llm.batch.jobs import request_line
    from autointerp.scorers.judge import ANSWER_SCHEMA

    req = LLMRequest(
        messages=[ChatMessage(role="system", content="s"), ChatMessage(role="user", content="u")],
        json_schema=ANSWER_SCHEMA,
        logprobs=5,
    )
    line = json.loads(json.dumps(request_line("k1", "some/model", req)))
    parsed = BatchRequestInput.model_validate(line)
    assert parsed.custom_id == "k1" and parsed.url == "/v1/chat/completions"
    assert parsed.body.model == "some/model" and parsed.body.top_logprobs == 5
    assert parsed.body.response_format.json_schema.json_schema == ANSWER_SCHEMA
    assert [m["content"] for m in parsed.body.messages] == ["s", "u"]


def test_client_stops_sending_once_the_cap_is_spent(server: FakeServer, api_key: str) -> None:
    """The guard behind the estimate: after llm.max_cost_usd is spent nothing more is sent."""
    cfg = fast_config(server, concurrency=1, max_cost_usd=1e-5)
    reqs = _requests(400)
    client = create_client(cfg)
    out = asyncio.run(_run(client, reqs))
    sent = [r for r in out if r.attempts > 0]
    held = [r for r in out if r.attempts == 0]
    assert held and all("llm.max_cost_usd" in (r.error or "") for r in held)
    assert server.hits == len(sent)
    spent = sum(r.cost_usd for r in sent)
    assert spent >= 1e-5 and spent - sent[-1].cost_usd < 1e-5
