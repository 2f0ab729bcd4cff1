"""One line per stage run appended to ``RUN_DIR/llm_usage.jsonl``: what the LLM cost."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from autointerp.llm.client import LLMClient

log = logging.getLogger(__name__)


def record_usage(run_dir: Path, stage: str, client: LLMClient, **extra: Any) -> dict[str, Any]:
    line = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "stage": stage,
        "backend": client.backend.name,
        "model": client.backend.model,
        **client.usage.summary(),
        **extra,
    }
    from autointerp.cost.budget import estimated_for

    est = estimated_for(Path(run_dir), stage)
    if est is not None:  # actual spend against the estimate made before the run
        line.update(est)
        log.info(
            "%s: spent $%.4f for %d prompt tokens; estimated $%.4f for %d",
            stage,
            line["cost_usd"],
            line["prompt_tokens"],
            est["estimated_cost_usd"],
            est["estimated_prompt_tokens"],
        )
    path = Path(run_dir) / "llm_usage.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(line) + "\n")
    return line
