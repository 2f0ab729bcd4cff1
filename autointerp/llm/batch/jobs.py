"""The batch jobs of a run, kept in ``RUN_DIR/batches/``: an append-only manifest
(``jobs.jsonl``, the last record of a chunk wins), each chunk's request JSONL and, once a job
has ended, its output. A killed process reads the manifest and resumes polling its jobs
instead of submitting their requests again."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from autointerp.llm.types import LLMRequest

# submitted: a job id exists; ended: its output (and errors) are on disk in ``output``;
# writing: the JSONL was written but no job id was recorded (look the job up by metadata).
STATES = ("writing", "submitted", "ended")


class Chunk(BaseModel):
    chunk: str  # our id, also the job's metadata["autointerp_chunk"]
    state: str
    custom_ids: list[str]
    tokens: int  # approximate prompt tokens (the enqueued-token limit)
    batch_id: str | None = None
    input_file_id: str | None = None
    status: str | None = None  # the provider's final status (completed, failed, expired...)
    error: str | None = None
    time: float = 0.0


def request_line(custom_id: str, model: str, request: LLMRequest) -> dict[str, Any]:
    """One JSONL line of OpenAI's Batch API (also what ``vllm run-batch`` reads)."""
    from autointerp.llm.openai_backend import chat_body

    if request.messages is None:
        raise ValueError("batch requests must be chat requests (messages)")
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": chat_body(model, request),
    }


class JobStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = folder / "jobs.jsonl"
        self.chunks: dict[str, Chunk] = {}
        if self.manifest.is_file():
            for line in self.manifest.read_text().splitlines():
                if line.strip():
                    c = Chunk.model_validate_json(line)
                    self.chunks[c.chunk] = c

    def save(self, chunk: Chunk) -> None:
        """Append the chunk's new state (flushed and fsynced: it must survive a kill)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        chunk.time = time.time()
        self.chunks[chunk.chunk] = chunk
        with self.manifest.open("a") as f:
            f.write(chunk.model_dump_json() + "\n")
            f.flush()
            import os

            os.fsync(f.fileno())

    def input_path(self, chunk: str) -> Path:
        return self.folder / f"{chunk}.input.jsonl"

    def output_path(self, chunk: str) -> Path:
        return self.folder / f"{chunk}.output.jsonl"

    def write_input(self, chunk: str, lines: list[dict[str, Any]]) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.input_path(chunk)
        with path.open("w") as f:
            for line in lines:
                f.write(json.dumps(line, ensure_ascii=False) + "\n")
        return path

    def read_output(self, chunk: str) -> dict[str, dict[str, Any]]:
        """custom_id -> the output (or error) line of an ended job."""
        path = self.output_path(chunk)
        out: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    out[str(d.get("custom_id"))] = d
        return out
