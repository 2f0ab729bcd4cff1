"""The openai-compatible backend through the real ``openai`` client against the fake server."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from fake_server import Action, FakeServer
from llm_helpers import fast_config

from autointerp.llm.client import create_client
from autointerp.llm.types import ChatMessage, LLMRequest

pytestmark = pytest.mark.timeout(60)


def chat(text: str = "hello", **kw: object) -> LLMRequest:
    return LLMRequest(messages=[ChatMessage(role="user", content=text)], **kw)


def run(coro):  # noqa: ANN001, ANN201
    return asyncio.run(coro)


async def _one(config, req, run_dir=None):  # noqa: ANN001, ANN202
    async with create_client(config, run_dir) as client:
        return await client.generate(req), client.usage.total


def test_plain_chat_with_logprobs_and_accounting(server: FakeServer, api_key: str) -> None:
    resp, usage = run(_one(fast_config(server), chat("hi there", logprobs=2, prompt_logprobs=1)))
    assert resp.ok and resp.text == "answer to: hi there"
    assert [t.token for t in resp.logprobs] == ["answer", "to:", "hi", "there"]
    assert len(resp.prompt_logprobs) == 2 and resp.prompt_logprobs[0].logprob is None
    assert (resp.prompt_tokens, resp.completion_tokens) == (2, 4)
    # gpt-4o-mini is in the default price table: 0.15 / 0.60 USD per million tokens
    assert resp.cost_usd == pytest.approx((2 * 0.15 + 4 * 0.60) / 1e6)
    assert usage.cost_usd == pytest.approx(resp.cost_usd) and usage.requests == 1
    assert server.requests[0]["headers"]["authorization"] == f"Bearer {api_key}"


def test_raw_prompt_completion(server: FakeServer, api_key: str) -> None:
    resp, _ = run(_one(fast_config(server), LLMRequest(prompt="a b c", logprobs=1)))
    assert resp.ok and resp.text == "continuation of: a b c"
    assert len(resp.logprobs) == 5 and server.requests[0]["path"] == "/v1/completions"


@pytest.mark.parametrize(
    "fault",
    [
        Action(status=429),
        Action(status=500),
        Action(status=503),
        Action(drop=True),
        Action(delay=3.0),  # longer than timeout_s
        Action(body="{not json"),
    ],
    ids=["429", "500", "503", "drop", "timeout", "malformed"],
)
def test_transient_faults_are_retried(server: FakeServer, api_key: str, fault: Action) -> None:
    server.script(fault, fault)
    resp, _ = run(_one(fast_config(server, timeout_s=0.5), chat()))
    assert resp.ok, resp.error
    assert resp.attempts == 3 and server.hits == 3


def test_a_local_server_is_waited_for_and_never_sent_a_request_twice(
    server: FakeServer, api_key: str
) -> None:
    # 127.0.0.1: a local server. Slower than timeout_s (a remote server's budget), yet the
    # client waits (local_timeout_s unset) and the request is sent once.
    server.script(Action(delay=1.2))
    config = fast_config(server, timeout_s=0.5, local_server=None)
    resp, _ = run(_one(config, chat()))
    assert resp.ok and resp.attempts == 1 and server.hits == 1
    # with a local timeout set, a request that exceeds it fails at once: not re-sent while
    # the server still computes it
    server.script(Action(delay=1.2))
    resp, _ = run(_one(fast_config(server, local_server=None, local_timeout_s=0.3), chat()))
    assert not resp.ok and "local_timeout_s" in resp.error
    assert resp.attempts == 1 and server.hits == 2


def test_retry_after_is_respected(server: FakeServer, api_key: str) -> None:
    server.script(Action(status=429, headers={"Retry-After": "0.6"}))
    start = time.monotonic()
    resp, _ = run(_one(fast_config(server), chat()))
    assert resp.ok and resp.attempts == 2
    assert time.monotonic() - start >= 0.6


def test_exhausted_retries_give_an_error_result(server: FakeServer, api_key: str) -> None:
    server.script(*[Action(status=500)] * 4)
    resp, usage = run(_one(fast_config(server, max_attempts=4), chat()))
    assert not resp.ok and "gave up after 4 attempts" in resp.error and "500" in resp.error
    assert resp.text == "" and server.hits == 4 and usage.errors == 1


def test_client_errors_are_not_retried(server: FakeServer, api_key: str) -> None:
    server.script(Action(status=400))
    resp, _ = run(_one(fast_config(server), chat()))
    assert not resp.ok and "400" in resp.error and server.hits == 1


def test_batch_survives_failures(server: FakeServer, api_key: str) -> None:
    server.script(*[Action(status=400)] * 3)

    async def main():  # noqa: ANN202
        async with create_client(fast_config(server)) as client:
            return await client.generate_many([chat(f"q{i}") for i in range(20)])

    results = run(main())
    assert len(results) == 20 and sum(not r.ok for r in results) == 3
    assert [r.text for r in results if r.ok][0].startswith("answer to: q")


def test_structured_output_parsed_and_bad_json_retried(server: FakeServer, api_key: str) -> None:
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    server.script(Action(text="no json here"), Action(text='```json\n{"score": 3}\n```'))
    resp, _ = run(_one(fast_config(server), chat(json_schema=schema)))
    assert resp.ok and resp.parsed == {"score": 3} and resp.attempts == 2
    fmt = server.requests[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["schema"] == schema


def test_unparseable_json_gives_error_with_raw_text(server: FakeServer, api_key: str) -> None:
    schema = {"type": "object", "required": ["score"]}
    server.script(*[Action(text='{"other": 1}')] * 3)
    resp, _ = run(_one(fast_config(server, json_attempts=3), chat(json_schema=schema)))
    assert not resp.ok and "unparseable JSON" in resp.error
    assert resp.text == '{"other": 1}' and server.hits == 3


def test_concurrency_is_bounded(api_key: str) -> None:
    server = FakeServer(latency=0.1).start()
    try:

        async def main():  # noqa: ANN202
            async with create_client(fast_config(server, concurrency=4)) as client:
                return await client.generate_many([chat(f"q{i}") for i in range(12)])

        start = time.monotonic()
        assert all(r.ok for r in run(main()))
        assert time.monotonic() - start >= 0.3  # 12 requests, 4 at a time, 0.1 s each
    finally:
        server.stop()


def test_requests_per_minute_limit(server: FakeServer, api_key: str) -> None:
    async def main():  # noqa: ANN202
        async with create_client(fast_config(server, requests_per_minute=600)) as client:
            return await client.generate_many([chat(f"q{i}") for i in range(15)])

    start = time.monotonic()
    assert all(r.ok for r in run(main()))
    # a 600/min bucket holds 10 at once (aiolimiter's burst), then refills at 10/s
    assert time.monotonic() - start >= 0.3


def test_missing_key_fails_with_env_var_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    from autointerp.llm.config import LLMConfig

    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        create_client(LLMConfig(model="openai:gpt-4o-mini"))


def test_usage_by_tag(server: FakeServer, api_key: str) -> None:
    async def main():  # noqa: ANN202
        async with create_client(fast_config(server)) as client:
            reqs = [chat(f"q{i}", tags={"latent": i % 2}) for i in range(4)]
            await client.generate_many(reqs)
            return client.usage

    usage = run(main())
    by_latent = usage.by("latent")
    assert set(by_latent) == {"0", "1"} and by_latent["0"].requests == 2
    assert by_latent["0"].cost_usd + by_latent["1"].cost_usd == pytest.approx(usage.total.cost_usd)
    assert json.dumps(usage.summary())
