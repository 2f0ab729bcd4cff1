"""How frequent tokens are in a hookpoint's cache, and picking marks of matching frequency:
the scorers (fuzzing, intruder) build items without a frequency cue with it, and the shortcut
audit (scorers/audit.py) measures that cue with it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np


def token_log_counts(run_dir: Path, hookpoint: str) -> np.ndarray | None:
    """log(1 + count) of every token id over the hookpoint's cached tokens (None without a
    cache: the frequency cue is then left out). Read once per cache and process."""
    folder = Path(run_dir) / "cache" / hookpoint.replace(":", "@")
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    return _log_counts(str(folder.resolve()), meta.stat().st_mtime_ns)


@lru_cache(maxsize=4)
def _log_counts(folder: str, _mtime: int) -> np.ndarray:
    import pyarrow.parquet as pq

    column = pq.read_table(Path(folder) / "tokens.parquet", columns=["tokens"]).column(0)
    flat = np.asarray(column.combine_chunks().flatten(), dtype=np.int64)
    return np.log1p(np.bincount(flat).astype(np.float64))


def mean_log_count(log_counts: np.ndarray, ids: np.ndarray, mask: np.ndarray) -> float:
    """Mean log(1 + count) of the tokens ``ids[mask]`` (0 when none is marked)."""
    on = np.asarray(ids, dtype=np.int64)[np.asarray(mask, dtype=bool)]
    if not len(on):
        return 0.0
    return float(log_counts[np.clip(on, 0, len(log_counts) - 1)].mean())


def closest(
    ids: np.ndarray, cands: list[np.ndarray], target: float, log_counts: np.ndarray | None
) -> np.ndarray:
    """The first of ``cands`` whose marked tokens (of ``ids``) are, on average, as frequent in
    the cache as ``target`` (log(1 + count)); the first candidate without counts. Masks of
    another length than the window are passed over."""
    if log_counts is None or len(cands) == 1:
        return cands[0]
    idx = np.asarray(ids, dtype=np.int64)
    fit = [i for i, m in enumerate(cands) if len(m) == len(idx)]  # masks of this window
    if not fit:
        return cands[0]
    marks = np.stack([cands[i] for i in fit]).astype(bool)
    return cands[fit[closest_row(idx, marks, target, log_counts)]]


def window_log_counts(log_counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log(1 + count) of each token of a window (ids outside the table clipped to it)."""
    idx = np.asarray(ids, dtype=np.int64)
    return log_counts[np.minimum(np.maximum(idx, 0), len(log_counts) - 1)]


def closest_row(
    ids: np.ndarray,
    marks: np.ndarray,
    target: float,
    log_counts: np.ndarray,
    counts: np.ndarray | None = None,
) -> int:
    """:func:`closest` over the rows of a matrix of masks (candidates x tokens of ``ids``):
    the index of the first row whose marked tokens' mean log count is nearest ``target``.
    ``counts``: ``window_log_counts(log_counts, ids)`` when the caller has it already."""
    if counts is None:
        counts = window_log_counts(log_counts, ids)
    n = marks.sum(axis=1)
    means = np.where(n > 0, (marks * counts).sum(axis=1) / np.maximum(n, 1), 0.0)
    return int(np.argmin(np.abs(means - target)))
