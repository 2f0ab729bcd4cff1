"""Batch files for an offline engine (``vllm run-batch``): write a stage's requests as the
Batch API's JSONL, and read the engine's output JSONL into the run's response cache, keyed by
each line's ``custom_id`` (the request's cache key). The stage then runs against the same
model and finds every answer in the cache: nothing is generated twice."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from autointerp.llm.base import parse_json
from autointerp.llm.batch.jobs import request_line
from autointerp.llm.cache import ResponseCache
from autointerp.llm.config import LLMConfig
from autointerp.llm.dry import Recorded
from autointerp.llm.openai_backend import OpenAIBackend
from autointerp.llm.types import LLMRequest

log = logging.getLogger(__name__)


def write_requests(recorded: list[Recorded], path: str | Path) -> int:
    """One Batch API line per distinct request (``custom_id`` = its cache key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w") as f:
        for r in recorded:
            if r.backend == "lexical":
                continue
            f.write(json.dumps(request_line(r.key, r.model, r.request), ensure_ascii=False) + "\n")
            n += 1
    return n


def _request_of(body: dict[str, Any]) -> LLMRequest:
    """What the parser needs from the original request (logprobs asked or not)."""
    return LLMRequest.model_construct(
        logprobs=body.get("top_logprobs") if body.get("logprobs") else None,
        prompt_logprobs=None,
    )


def import_results(
    run_dir: str | Path, config: LLMConfig, outputs: str | Path, inputs: str | Path | None = None
) -> tuple[int, int]:
    """Answers of ``outputs`` (Batch API / ``vllm run-batch`` output JSONL) into the run's
    response cache; ``inputs`` (the request JSONL) supplies each answer's JSON schema and
    logprobs setting. Returns (answers stored, lines skipped as failed)."""
    bodies: dict[str, dict[str, Any]] = {}
    if inputs is not None:
        for line in Path(inputs).read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                bodies[d["custom_id"]] = d["body"]
    parser = SimpleNamespace(name=config.backend, model=config.model_name)
    cache = ResponseCache(Path(run_dir) / config.cache_file)
    stored = failed = 0
    try:
        for line in Path(outputs).read_text().splitlines():
            if not line.strip():
                continue
            d = json.loads(line)
            resp = d.get("response") or {}
            if d.get("error") or int(resp.get("status_code") or 0) != 200:
                failed += 1
                continue
            body = bodies.get(d["custom_id"], {})
            out = OpenAIBackend._parse_chat(parser, resp["body"], _request_of(body))  # type: ignore[arg-type]
            schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema")
            if schema is not None:
                try:
                    out.parsed = parse_json(out.text, schema)
                except ValueError:
                    failed += 1  # left out: the stage asks again
                    continue
            cache.put(d["custom_id"], out)
            stored += 1
    finally:
        cache.close()
    log.info("imported %d answers into %s (%d failed lines left out)", stored, run_dir, failed)
    return stored, failed
