"""What each LLM stage ran with, recorded in the run directory (docs/score.md, Provenance).

After ``explain``, ``score``, ``rescore`` or ``calibrate``:

- ``RUN_DIR/stages/<stage>.json``: the stage's resolved settings (the LLM's backend, model and
  endpoint, never a key; the explainer and its explanation set, or the scorers with their
  config hashes and judges) and when it ran;
- ``RUN_DIR/run.yaml``: its ``llm`` section and the stage's own section (``explain``,
  ``score``) replaced by what the stage used, so a later stage started without ``--llm``
  keeps the same model (``score`` says in one line which judge it uses and where from).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import yaml

from autointerp.config import RunConfig, save_config


def stages_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "stages"


def llm_settings(config: RunConfig, backend: str | None = None) -> dict[str, Any]:
    """The LLM a stage used: ``model`` (backend:model), backend, endpoint (None in process)."""
    llm = config.llm if backend is None else type(config.llm)(model=backend)
    return {
        "model": llm.model,
        "backend": llm.backend,
        "model_name": llm.model_name,
        "endpoint": llm.endpoint,
    }


def record_stage(
    run_dir: str | Path,
    stage: str,
    config: RunConfig,
    sections: tuple[str, ...] = (),
    **settings: Any,
) -> Path:
    """Write ``stages/<stage>.json`` and update ``run.yaml`` (its ``llm`` and ``sections``);
    returns the JSON file."""
    run_dir = Path(run_dir)
    out = stages_dir(run_dir) / f"{stage}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "stage": stage,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "llm": llm_settings(config),
        **settings,
    }
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, out)
    update_run_yaml(run_dir, config, ("llm", *sections))
    return out


def update_run_yaml(run_dir: Path, config: RunConfig, sections: tuple[str, ...]) -> Path:
    """Replace ``sections`` of ``run.yaml`` with ``config``'s (the whole resolved config when
    there is no run.yaml yet). ``llm.refresh_before`` (a --force) is never saved."""
    path = Path(run_dir) / "run.yaml"
    if not path.is_file():
        clean = config.model_copy(deep=True)
        clean.llm.refresh_before = None
        clean.run_dir = Path(run_dir)
        return save_config(clean, run_dir)
    data = yaml.safe_load(path.read_text()) or {}
    for name in sections:
        section = getattr(config, name).model_dump(mode="json")
        if name == "llm":
            section.pop("refresh_before", None)
        data[name] = section
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)
    return path


def read_stage(run_dir: str | Path, stage: str) -> dict[str, Any] | None:
    path = stages_dir(run_dir) / f"{stage}.json"
    return json.loads(path.read_text()) if path.is_file() else None
