"""A fake OpenAI-compatible HTTP server for tests and the benchmark (stdlib asyncio only).

Serves /v1/chat/completions and /v1/completions with usage, logprobs and vLLM-style prompt
logprobs, and the Batch API (fake_batch.py). Tests script per-call behaviour with
:class:`Action` (status, Retry-After, delay, malformed body, dropped connection) and count
hits. Run as a script for a separate process:
``python fake_server.py --latency 0.1`` prints ``PORT <n>`` and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fake_batch

Responder = Callable[[dict[str, Any]], str]
# (prompt tokens, request) -> the logprob of each prompt token after the first (default -1.0)
PromptScorer = Callable[[list[str], dict[str, Any]], list[float]]
# an answer token -> its top alternatives, (token, logprob), itself included (default: itself, -0.5)
Alternatives = Callable[[str], list[tuple[str, float]]]


@dataclass
class Action:
    """What the server does for one hit (consumed in order; default: answer normally)."""

    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: str | None = None  # raw body instead of a completion (e.g. malformed JSON)
    text: str | None = None  # the answer's content instead of the responder's
    drop: bool = False  # close the connection without answering


def default_responder(body: dict[str, Any]) -> str:
    if "messages" in body:
        return "answer to: " + str(body["messages"][-1]["content"])[:80]
    return "continuation of: " + str(body.get("prompt", ""))[:80]


def _tokens(text: str) -> list[str]:
    return text.split() or [""]


def _tid(token: str) -> int:
    return zlib.crc32(token.encode()) % 50_000


def _prompt_logprobs(tokens: list[str], values: list[float] | None = None) -> list[Any]:
    """vLLM server format: None for the first token, then {token_id: {logprob, rank, ...}}."""
    values = values if values is not None else [-1.0] * (len(tokens) - 1)
    rest = [
        {str(_tid(t)): {"logprob": v, "rank": 1, "decoded_token": t}}
        for t, v in zip(tokens[1:], values, strict=True)
    ]
    return [None, *rest]


def completion_body(
    request: dict[str, Any],
    text: str,
    chat: bool,
    prompt_scorer: PromptScorer | None = None,
    alternatives: Alternatives | None = None,
) -> dict[str, Any]:
    if chat:
        prompt_text = " ".join(str(m.get("content", "")) for m in request.get("messages", []))
    else:
        prompt_text = str(request.get("prompt", ""))
    p_toks, c_toks = _tokens(prompt_text), _tokens(text)
    usage = {
        "prompt_tokens": len(p_toks),
        "completion_tokens": len(c_toks),
        "total_tokens": len(p_toks) + len(c_toks),
    }
    choice: dict[str, Any] = {"index": 0, "finish_reason": "stop", "logprobs": None}
    body: dict[str, Any] = {
        "id": "cmpl-fake",
        "created": int(time.time()),
        "model": request.get("model", "fake"),
        "usage": usage,
    }
    k_prompt = request.get("prompt_logprobs")
    values = prompt_scorer(p_toks, request) if prompt_scorer and k_prompt is not None else None
    if chat:
        body["object"] = "chat.completion"
        choice["message"] = {"role": "assistant", "content": text}
        if request.get("logprobs"):
            k = int(request.get("top_logprobs") or 0)
            content = []
            for t in c_toks:
                alts = alternatives(t) if alternatives else [(t, -0.5)]
                own = dict(alts).get(t, -0.5)
                top = [{"token": a, "logprob": v, "bytes": None} for a, v in alts[:k]]
                content.append({"token": t, "logprob": own, "bytes": None, "top_logprobs": top})
            choice["logprobs"] = {"content": content}
        if k_prompt is not None:
            body["prompt_logprobs"] = _prompt_logprobs(p_toks, values)
            body["prompt_token_ids"] = [_tid(t) for t in p_toks]
    else:
        body["object"] = "text_completion"
        choice["text"] = text
        if request.get("logprobs") is not None:
            choice["logprobs"] = {
                "tokens": c_toks,
                "token_logprobs": [-0.5] * len(c_toks),
                "top_logprobs": [{t: -0.5} for t in c_toks],
                "text_offset": list(range(len(c_toks))),
            }
        if k_prompt is not None:
            choice["prompt_logprobs"] = _prompt_logprobs(p_toks, values)
            choice["prompt_token_ids"] = [_tid(t) for t in p_toks]
    body["choices"] = [choice]
    return body


class FakeServer:
    """Serve on 127.0.0.1 in a background thread (``start``) or in this thread (``serve``)."""

    def __init__(
        self,
        latency: float = 0.0,
        responder: Responder = default_responder,
        prompt_scorer: PromptScorer | None = None,
        alternatives: Alternatives | None = None,
    ) -> None:
        self.latency = latency
        self.responder = responder
        self.prompt_scorer = prompt_scorer  # scripted prompt logprobs (default all -1.0)
        self.alternatives = alternatives  # scripted top logprobs of the answer's tokens
        self.actions: deque[Action] = deque()
        self.batch = fake_batch.BatchState()
        self.hits = 0
        self.requests: list[dict[str, Any]] = []
        # (wall time, "hit" or "answered", hash of the request body): what was asked again
        self.events: list[tuple[float, str, str]] = []
        self.events_file: Any = None  # an open text file: each event also written as a line
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *actions: Action) -> None:
        self.actions.extend(actions)

    # -- lifecycle --------------------------------------------------------------------------
    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=512)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._open())
            ready.set()
            self._loop.run_forever()
            pending = asyncio.all_tasks(self._loop)
            for task in pending:
                task.cancel()
            self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True, name="fake-openai")
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        loop = self._loop

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            loop.stop()

        asyncio.run_coroutine_threadsafe(close(), loop)
        if self._thread is not None:
            self._thread.join(5)

    async def serve(self) -> None:
        await self._open()
        print(f"PORT {self.port}", flush=True)
        assert self._server is not None
        await self._server.serve_forever()

    def _event(self, kind: str, key: str) -> None:
        event = (time.time(), kind, key)
        self.events.append(event)
        if self.events_file is not None:
            self.events_file.write(f"{event[0]:.6f} {kind} {key}\n")
            self.events_file.flush()

    # -- HTTP -------------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                raw = await reader.readexactly(int(headers.get("content-length", 0)))
                if not await self._respond(writer, method, path, headers, raw):
                    break
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            asyncio.LimitOverrunError,
            asyncio.CancelledError,
        ):
            pass
        finally:
            writer.close()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        path: str,
        headers: dict[str, str],
        raw: bytes,
    ) -> bool:
        self.hits += 1
        body_key = hashlib.sha256(raw).hexdigest()
        self._event("hit", body_key)
        batch = fake_batch.handle(
            self.batch,
            self.responder,
            lambda req, text: completion_body(
                req, text, True, self.prompt_scorer, self.alternatives
            ),
            method,
            path,
            headers,
            raw,
        )
        if batch is not None:  # the Batch API (tests/llm/fake_batch.py)
            self.requests.append({"path": path, "method": method, "headers": headers})
            status, data = batch
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            return True
        try:
            request = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            request = {}
        self.requests.append({"path": path, "headers": headers, "body": request})
        action = self.actions.popleft() if self.actions else Action()
        delay = action.delay or self.latency
        if delay:
            await asyncio.sleep(delay)
        if action.drop:
            writer.transport.abort()
            return False
        chat = path.endswith("/chat/completions")
        if action.body is not None:
            payload = action.body
        elif action.status != 200:
            payload = json.dumps(
                {
                    "error": {
                        "message": f"scripted {action.status}",
                        "type": "fake",
                        "code": action.status,
                    }
                }
            )
        elif not (chat or path.endswith("/completions")):
            action.status, payload = 404, json.dumps({"error": {"message": "no route"}})
        else:
            text = action.text if action.text is not None else self.responder(request)
            body = completion_body(request, text, chat, self.prompt_scorer, self.alternatives)
            payload = json.dumps(body)
        data = payload.encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in action.headers.items())
        writer.write(
            f"HTTP/1.1 {action.status} X\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()
        self._event("answered", body_key)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument(
        "--responder",
        choices=["echo", "judge"],
        default="echo",
        help="echo the prompt, or answer explain/score prompts (tests/scripted_judge.py)",
    )
    parser.add_argument("--events", help="append each hit and answer to this file")
    args = parser.parse_args()
    responder: Responder = default_responder
    if args.responder == "judge":
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from scripted_judge import ScriptedJudge

        responder = ScriptedJudge(record=False)
    server = FakeServer(latency=args.latency, responder=responder)
    server.port = args.port
    if args.events:
        server.events_file = open(args.events, "a")  # noqa: SIM115 - open while serving
    asyncio.run(server.serve())


if __name__ == "__main__":
    main()
