"""What a hookpoint's cache directory already holds: complete, resumable, or foreign.

Checked before any heavy work, so a bad state fails fast and leaves the files as they are.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from autointerp.cache.errors import CacheMismatchError, CorruptCacheError
from autointerp.cache.layout import CacheLayout, open_parquet, remove_temp_files, tmp_path
from autointerp.cache.writer import SpillFile, chunk_files

log = logging.getLogger(__name__)

State = Literal["complete", "resume", "fresh"]


def _fingerprint_file(layout: CacheLayout) -> Path:
    return layout.work / "fingerprint.txt"


def _mismatch(layout: CacheLayout, found: str, wanted: str) -> CacheMismatchError:
    return CacheMismatchError(
        f"{layout.root} already holds a cache made with a different config ({found} != "
        f"{wanted}); pass a new --run-dir, or delete {layout.root} to rebuild it"
    )


def read_meta(layout: CacheLayout) -> dict[str, Any]:
    try:
        return json.loads(layout.meta.read_text())
    except (OSError, ValueError) as exc:
        raise CorruptCacheError(layout.meta, str(exc).splitlines()[0][:120]) from None


def inspect(layout: CacheLayout, fingerprint: str, legacy: str | None = None) -> State:
    """Classify the directory and validate every file a resume would rely on.

    ``legacy`` is the same config's fingerprint as computed before the memory settings were
    left out of it: a cache made (or started) then is still complete (or resumable).
    """
    accepted = {fingerprint, legacy or fingerprint}
    if layout.meta.exists():
        meta = read_meta(layout)
        if meta.get("config_hash") not in accepted:
            raise _mismatch(layout, str(meta.get("config_hash")), fingerprint)
        missing = [s for s in meta["shards"] if not layout.part(int(s[0]), int(s[1])).exists()]
        for s in meta["shards"]:
            part = layout.part(int(s[0]), int(s[1]))
            if part.exists():
                open_parquet(part)
        for path in (layout.tokens, layout.stats):
            if path.exists():
                open_parquet(path)
        if not missing and layout.tokens.exists() and layout.stats.exists():
            return "complete"
        log.info("%s: %d part file(s) missing; rebuilding them", layout.root, len(missing))
        return "resume"
    fp_file = _fingerprint_file(layout)
    if fp_file.exists():
        found = fp_file.read_text().strip()
        if found not in accepted:
            raise _mismatch(layout, found, fingerprint)
        plan = load_plan(layout)
        n_shards = len(plan["shards"]) if plan else None
        for path in chunk_files(layout):
            SpillFile(path, n_shards).close()
        for path in sorted((layout.work / "tokens").glob("*.parquet")):
            open_parquet(path)
        for s, e in plan["shards"] if plan else []:
            if layout.part(s, e).exists():
                open_parquet(layout.part(s, e))
        return "resume"
    if layout.activations.exists() and any(layout.activations.iterdir()):
        raise CacheMismatchError(
            f"{layout.root} holds part files but no meta.json or _work state, so it cannot be "
            f"resumed; delete {layout.root} or pass a new --run-dir"
        )
    return "fresh"


def begin(layout: CacheLayout, fingerprint: str, state: State) -> None:
    """Record the fingerprint (before anything else is written) and clear stale temp files."""
    layout.work.mkdir(parents=True, exist_ok=True)
    remove_temp_files(layout.root)
    _fingerprint_file(layout).write_text(fingerprint + "\n")
    chunks = layout.work / "chunks"
    legacy = sorted([*chunks.glob("chunk-*.parquet"), *chunks.glob("chunk-*.arrow")])
    if legacy:  # spill files of earlier versions (Parquet, Arrow IPC): run the forward again
        log.warning(
            "%s: %d spill files of an older version; caching their windows again",
            layout.root,
            len(legacy),
        )
        for path in legacy:
            path.unlink()
        layout.done.unlink(missing_ok=True)
    if state == "resume" and layout.meta.exists():
        meta = read_meta(layout)
        if not layout.plan.exists():
            plan = {"shards": meta["shards"], "mean_l0": None, "chunk_windows": None}
            save_json(layout.plan, plan)
        layout.meta.unlink()  # incomplete again until the missing parts are rebuilt


def load_plan(layout: CacheLayout) -> dict[str, Any] | None:
    if not layout.plan.exists():
        return None
    plan = json.loads(layout.plan.read_text())
    plan["shards"] = [(int(a), int(b)) for a, b in plan["shards"]]
    return plan


def save_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)
