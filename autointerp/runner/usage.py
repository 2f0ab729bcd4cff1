"""One line per stage run appended to ``RUN_DIR/llm_usage.jsonl``: what the LLM cost."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from autointerp.llm.client import LLMClient


def record_usage(run_dir: Path, stage: str, client: LLMClient, **extra: Any) -> dict[str, Any]:
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stage": stage,
        "backend": client.backend.name,
        "model": client.backend.model,
        **client.usage.summary(),
        **extra,
    }
    path = Path(run_dir) / "llm_usage.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    return line
