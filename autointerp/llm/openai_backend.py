"""OpenAI-compatible HTTP backend: OpenAI, OpenRouter, or a ``vllm serve`` server.

One attempt per call; failures are mapped to :class:`RetryableError` / :class:`FatalError` so
the client's tenacity loop does the retrying (the openai client's own retries are off).
The API key is read from the environment variable named in the config and is redacted from
every error message this module produces.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

import httpx2
import openai

from autointerp.llm.base import Backend, FatalError, RetryableError
from autointerp.llm.config import OPENROUTER_URL, LLMConfig
from autointerp.llm.types import LLMRequest, LLMResponse, TokenLogprob, TopLogprob

log = logging.getLogger(__name__)
# The HTTP client logs every request at INFO: far too much for thousands of calls.
for _name in ("httpx2", "httpx"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "openrouter": "OPENROUTER_API_KEY"}
RETRY_STATUS = {408, 409, 425, 429}


def retry_after_seconds(headers: Any) -> float | None:
    """Seconds from ``Retry-After`` (seconds or HTTP date) or ``retry-after-ms``."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return float(ms) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


class OpenAIBackend(Backend):
    local = False

    def __init__(self, config: LLMConfig) -> None:
        self.name = config.backend
        self.model = config.model_name
        base_url = config.base_url or (OPENROUTER_URL if self.name == "openrouter" else None)
        key_env = config.api_key_env or DEFAULT_KEY_ENV.get(self.name, "OPENAI_API_KEY")
        key = os.environ.get(key_env)
        if not key:
            if base_url is None or self.name == "openrouter":
                raise ValueError(
                    f"{self.name} backend needs an API key in the environment variable {key_env} "
                    f"(set llm.api_key_env to use another variable)"
                )
            key = "EMPTY"  # a local `vllm serve` accepts any key
        self._secret = key
        self._local_timeout = config.local_timeout_s
        # A server on this machine (vllm serve) is free: no warning about a missing price.
        self.on_localhost = (
            config.local_server
            if config.local_server is not None
            else base_url is not None
            and any(h in base_url for h in ("://localhost", "://127.0.0.1", "://[::1]"))
        )
        limits = httpx2.Limits(
            max_connections=config.concurrency + 8,
            max_keepalive_connections=config.concurrency + 8,
        )
        timeout = (
            httpx2.Timeout(config.local_timeout_s, connect=10.0)
            if self.on_localhost
            else httpx2.Timeout(config.timeout_s)
        )
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
            http_client=_http_client(config.http_client)(limits=limits, timeout=timeout),
        )

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if len(self._secret) >= 4 else text

    async def complete(self, request: LLMRequest) -> LLMResponse:
        try:
            if request.messages is not None:
                raw = await self._chat(request)
            else:
                raw = await self._completion(request)
        except openai.APITimeoutError as e:
            if self.on_localhost:  # the server is still computing it: sending it again doubles
                raise FatalError(  # the work (raise llm.local_timeout_s, or unset it)
                    f"timeout after llm.local_timeout_s={self._local_timeout}s on a local server"
                ) from e
            raise RetryableError("timeout") from e
        except openai.APIConnectionError as e:
            raise RetryableError(f"connection error: {self.redact(str(e))}") from e
        except openai.APIStatusError as e:
            # the SDK's message starts "Error code: 503 - ": say the status once
            detail = re.sub(r"^Error code: \d+( - )?", "", e.message).strip()
            msg = self.redact(f"HTTP {e.status_code}" + (f": {detail}" if detail else ""))
            if e.status_code in RETRY_STATUS or e.status_code >= 500:
                raise RetryableError(msg, retry_after_seconds(e.response.headers)) from e
            raise FatalError(msg) from e
        except (openai.APIResponseValidationError, ValueError, TypeError) as e:
            raise RetryableError(f"malformed response: {self.redact(str(e))[:200]}") from e
        return raw

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST through the openai client's public low-level ``post``: same auth, headers and
        error types (``APIStatusError`` and friends) as ``chat.completions.create``, but the
        raw ``httpx2.Response`` comes back and its JSON is read here straight into our types.
        That skips the SDK's per-call TypedDict transform of the body and its recursive
        ``construct_type`` of the response models: the main CPU costs at hundreds of
        requests per second."""
        raw = await self._client.post(
            path,
            cast_to=httpx2.Response,
            body=body,
            options={"security": {"bearer_auth": True}},
        )
        data = json.loads(raw.content)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        return data

    def _extra_body(self, request: LLMRequest) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if request.prompt_logprobs is not None:
            # vLLM-server extensions; other servers may reject them.
            extra["prompt_logprobs"] = request.prompt_logprobs
            extra["return_token_ids"] = True
        return extra

    async def _chat(self, request: LLMRequest) -> LLMResponse:
        body = chat_body(self.model, request)
        body.update(self._extra_body(request))
        data = await self._post("/chat/completions", body)
        return _malformed_to_value_error(self._parse_chat, data, request)

    def _parse_chat(self, data: dict[str, Any], request: LLMRequest) -> LLMResponse:
        choices = data.get("choices")
        if not choices:
            raise ValueError("response has no choices")
        choice = choices[0]
        message = choice.get("message") or {}
        out = _response(message.get("content") or "", choice.get("finish_reason"), self)
        lp = choice.get("logprobs")
        if request.logprobs is not None and lp and lp.get("content"):
            out.logprobs = [
                TokenLogprob.model_construct(
                    token=t["token"],
                    logprob=_float_or_none(t.get("logprob")),
                    token_id=None,
                    top=[
                        TopLogprob.model_construct(
                            token=a["token"], logprob=float(a["logprob"]), token_id=None
                        )
                        for a in t.get("top_logprobs") or []
                    ],
                )
                for t in lp["content"]
            ]
        if request.prompt_logprobs is not None:
            out.prompt_logprobs = _vllm_prompt_logprobs(
                data.get("prompt_logprobs"), data.get("prompt_token_ids")
            )
        _usage(out, data.get("usage"))
        return out

    async def _completion(self, request: LLMRequest) -> LLMResponse:
        s = request.sampling
        extra = self._extra_body(request)
        if request.json_schema is not None:
            extra["structured_outputs"] = {"json": request.json_schema}
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": request.prompt or "",
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            **extra,
        }
        if request.logprobs is not None:
            body["logprobs"] = request.logprobs
        if s.stop:
            body["stop"] = s.stop
        if s.seed is not None:
            body["seed"] = s.seed
        data = await self._post("/completions", body)
        return _malformed_to_value_error(self._parse_completion, data, request)

    def _parse_completion(self, data: dict[str, Any], request: LLMRequest) -> LLMResponse:
        choices = data.get("choices")
        if not choices:
            raise ValueError("response has no choices")
        choice = choices[0]
        out = _response(choice.get("text") or "", choice.get("finish_reason"), self)
        lp = choice.get("logprobs")
        if request.logprobs is not None and lp and lp.get("tokens"):
            tokens = lp["tokens"]
            tops = lp.get("top_logprobs") or [{}] * len(tokens)
            out.logprobs = [
                TokenLogprob.model_construct(
                    token=tok,
                    logprob=_float_or_none(lp_),
                    token_id=None,
                    top=[
                        TopLogprob.model_construct(token=k, logprob=float(v), token_id=None)
                        for k, v in (top or {}).items()
                    ],
                )
                for tok, lp_, top in zip(tokens, lp.get("token_logprobs") or [], tops, strict=False)
            ]
        if request.prompt_logprobs is not None:
            out.prompt_logprobs = _vllm_prompt_logprobs(
                choice.get("prompt_logprobs"), choice.get("prompt_token_ids")
            )
        _usage(out, data.get("usage"))
        return out

    async def aclose(self) -> None:
        await self._client.close()


def chat_body(model: str, request: LLMRequest) -> dict[str, Any]:
    """The body of a ``/chat/completions`` request (live, or one line of a batch file)."""
    s = request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages or []],
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
    }
    if request.json_schema is not None:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
        }
    if request.logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = request.logprobs
    if s.seed is not None:
        body["seed"] = s.seed
    if s.stop:
        body["stop"] = s.stop
    return body


def _http_client(kind: str) -> type[httpx2.AsyncClient]:
    if kind == "httpx":
        return openai.DefaultAsyncHttpxClient
    try:
        import aiohttp  # noqa: F401  (the extra `openai[aiohttp]`)
    except ImportError as e:
        if kind == "aiohttp":
            raise ValueError("llm.http_client 'aiohttp' needs `pip install openai[aiohttp]`") from e
        return openai.DefaultAsyncHttpxClient
    return openai.DefaultAioHttpClient


def _response(text: str, finish_reason: str | None, backend: OpenAIBackend) -> LLMResponse:
    """An LLMResponse built without validation (every field is set to a valid value)."""
    return LLMResponse.model_construct(
        text=text,
        finish_reason=finish_reason,
        backend=backend.name,
        model=backend.model,
        metadata={},
    )


def _malformed_to_value_error(
    parse: Callable[[dict[str, Any], LLMRequest], LLMResponse],
    data: dict[str, Any],
    request: LLMRequest,
) -> LLMResponse:
    """Run ``parse``; a response of the wrong shape becomes a ValueError (a malformed
    response, retried) rather than an unexpected backend error."""
    try:
        return parse(data, request)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise ValueError(f"unexpected response shape ({type(e).__name__}: {e})") from e


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _usage(out: LLMResponse, usage: dict[str, Any] | None) -> None:
    if usage:
        out.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        out.completion_tokens = int(usage.get("completion_tokens") or 0)


def _vllm_prompt_logprobs(
    entries: list[dict[str, dict[str, Any]] | None] | None, token_ids: list[int] | None
) -> list[TokenLogprob] | None:
    """vLLM server format: per prompt position None (first) or {token_id: {logprob, rank,
    decoded_token}}; the position's own token is the one whose id is in ``prompt_token_ids``."""
    if entries is None:
        return None
    out: list[TokenLogprob] = []
    for i, entry in enumerate(entries):
        tid = token_ids[i] if token_ids and i < len(token_ids) else None
        if not entry:
            out.append(TokenLogprob(token="", token_id=tid, logprob=None))
            continue
        own = entry.get(str(tid)) if tid is not None else None
        own = own or next(iter(entry.values()))
        top = sorted(entry.items(), key=lambda kv: kv[1].get("rank") or 0)
        out.append(
            TokenLogprob(
                token=own.get("decoded_token") or "",
                token_id=tid,
                logprob=own.get("logprob"),
                top=[
                    TopLogprob(
                        token=v.get("decoded_token") or "", logprob=v["logprob"], token_id=int(k)
                    )
                    for k, v in top
                ],
            )
        )
    return out
