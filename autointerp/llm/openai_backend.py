"""OpenAI-compatible HTTP backend: OpenAI, OpenRouter, or a ``vllm serve`` server.

One attempt per call; failures are mapped to :class:`RetryableError` / :class:`FatalError` so
the client's tenacity loop does the retrying (the openai client's own retries are off).
The API key is read from the environment variable named in the config and is redacted from
every error message this module produces.
"""

from __future__ import annotations

import email.utils
import logging
import os
import time
from typing import Any, TypeVar

import httpx2
import openai
from openai.types import Completion
from openai.types.chat import ChatCompletion

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
T = TypeVar("T")


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
        # A server on this machine (vllm serve) is free: no warning about a missing price.
        self.on_localhost = base_url is not None and any(
            h in base_url for h in ("://localhost", "://127.0.0.1", "://[::1]")
        )
        limits = httpx2.Limits(
            max_connections=config.concurrency + 8,
            max_keepalive_connections=config.concurrency + 8,
        )
        self._client = openai.AsyncOpenAI(
            api_key=key,
            base_url=base_url,
            timeout=config.timeout_s,
            max_retries=0,
            http_client=_http_client(config.http_client)(limits=limits, timeout=config.timeout_s),
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
            raise RetryableError("timeout") from e
        except openai.APIConnectionError as e:
            raise RetryableError(f"connection error: {self.redact(str(e))}") from e
        except openai.APIStatusError as e:
            msg = self.redact(f"HTTP {e.status_code}: {e.message}")
            if e.status_code in RETRY_STATUS or e.status_code >= 500:
                raise RetryableError(msg, retry_after_seconds(e.response.headers)) from e
            raise FatalError(msg) from e
        except (openai.APIResponseValidationError, ValueError, TypeError) as e:
            raise RetryableError(f"malformed response: {self.redact(str(e))[:200]}") from e
        return raw

    async def _post(self, path: str, body: dict[str, Any], cast_to: type[T]) -> T:
        """POST through the openai client's public low-level ``post``: same auth, errors and
        response models as ``chat.completions.create``, without its per-call TypedDict
        transform of the body (the main CPU cost at hundreds of requests per second; our
        body is plain JSON already)."""
        return await self._client.post(
            path, cast_to=cast_to, body=body, options={"security": {"bearer_auth": True}}
        )

    def _extra_body(self, request: LLMRequest) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if request.prompt_logprobs is not None:
            # vLLM-server extensions; other servers may reject them.
            extra["prompt_logprobs"] = request.prompt_logprobs
            extra["return_token_ids"] = True
        return extra

    async def _chat(self, request: LLMRequest) -> LLMResponse:
        s = request.sampling
        kwargs: dict[str, Any] = {}
        if request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": request.json_schema, "strict": True},
            }
        if request.logprobs is not None:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.logprobs
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if s.stop:
            kwargs["stop"] = s.stop
        body = {
            "model": self.model,
            "messages": [m.model_dump() for m in request.messages or []],
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
            **kwargs,
            **self._extra_body(request),
        }
        resp = await self._post("/chat/completions", body, ChatCompletion)
        if not resp.choices:
            raise ValueError("response has no choices")
        choice = resp.choices[0]
        out = LLMResponse(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            backend=self.name,
            model=self.model,
        )
        if request.logprobs is not None and choice.logprobs and choice.logprobs.content:
            out.logprobs = [
                TokenLogprob(
                    token=t.token,
                    logprob=t.logprob,
                    top=[TopLogprob(token=a.token, logprob=a.logprob) for a in t.top_logprobs],
                )
                for t in choice.logprobs.content
            ]
        extra = resp.model_extra or {}
        if request.prompt_logprobs is not None:
            out.prompt_logprobs = _vllm_prompt_logprobs(
                extra.get("prompt_logprobs"), extra.get("prompt_token_ids")
            )
        _usage(out, resp.usage)
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
        resp = await self._post("/completions", body, Completion)
        if not resp.choices:
            raise ValueError("response has no choices")
        choice = resp.choices[0]
        out = LLMResponse(
            text=choice.text or "",
            finish_reason=choice.finish_reason,
            backend=self.name,
            model=self.model,
        )
        lp = choice.logprobs
        if request.logprobs is not None and lp and lp.tokens:
            tops = lp.top_logprobs or [{}] * len(lp.tokens)
            out.logprobs = [
                TokenLogprob(
                    token=tok,
                    logprob=lp_ if lp_ is not None else None,
                    top=[TopLogprob(token=k, logprob=v) for k, v in (top or {}).items()],
                )
                for tok, lp_, top in zip(lp.tokens, lp.token_logprobs or [], tops, strict=False)
            ]
        if request.prompt_logprobs is not None:
            cx = choice.model_extra or {}
            out.prompt_logprobs = _vllm_prompt_logprobs(
                cx.get("prompt_logprobs"), cx.get("prompt_token_ids")
            )
        _usage(out, resp.usage)
        return out

    async def aclose(self) -> None:
        await self._client.close()


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


def _usage(out: LLMResponse, usage: Any) -> None:
    if usage is not None:
        out.prompt_tokens = int(usage.prompt_tokens or 0)
        out.completion_tokens = int(usage.completion_tokens or 0)


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
