"""Pearson correlation of simulated vs true activations, with a bootstrap over windows.

Keys of :func:`pearson_metrics` (predicted vs true per-token activations):

- ``n_windows``, ``n_tokens``: windows and tokens scored.
- ``pearson``: Pearson correlation over all tokens of all windows. A constant prediction
  (zero variance) correlates **0.0**, not NaN: it carries no information, which is the chance
  level; NaN only when the truth is constant (or there are no tokens). ``pearson_lo``,
  ``pearson_hi``: bootstrap over windows (a resample with a constant prediction counts 0).
  ``pearson_chance`` = 0.0.
- ``constant_prediction``: 1.0 when every predicted value is the same (so ``pearson`` is 0
  by this rule), 0.0 otherwise, NaN without tokens.
- ``pearson_q{g}``, ``pearson_q{g}_lo``, ``pearson_q{g}_hi`` (only with ``groups``), for
  every group g >= 0: the correlation over the windows of group g together with all
  contrast windows (group -1).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from autointerp.scorers.metrics import (
    _NAN,
    _REL_VAR_TOL,
    N_BOOT,
    _check_ci,
    _counts,
    _draws,
    _percentile_ci,
)


def _pearson_tokens(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of truth ``x`` and prediction ``y``; NaN if empty or the truth is
    constant, 0.0 if only the prediction is."""
    if x.size == 0 or np.ptp(x) == 0:
        return _NAN
    if np.ptp(y) == 0:
        return 0.0
    xc, yc = x - x.mean(), y - y.mean()
    r = np.dot(xc, yc) / np.sqrt(np.dot(xc, xc) * np.dot(yc, yc))
    return float(np.clip(r, -1.0, 1.0))


def _pearson_stats(stats: np.ndarray) -> np.ndarray:
    """Pearson r per row of sufficient statistics ``[..., 6]`` = (n, Sx, Sy, Sxx, Syy, Sxy).

    NaN where the truth's variance (x) is (numerically) zero or there are no tokens; 0.0 where
    only the prediction's (y) is.
    """
    n, sx, sy, sxx, syy, sxy = np.moveaxis(stats, -1, 0)
    vx, vy = n * sxx - sx * sx, n * syy - sy * sy
    flat_x = (vx <= _REL_VAR_TOL * n * sxx) | (n == 0)
    flat = flat_x | (vy <= _REL_VAR_TOL * n * syy)
    den = np.sqrt(np.where(flat, 1.0, vx * vy))
    r = np.where(flat, 0.0, np.clip((n * sxy - sx * sy) / den, -1.0, 1.0))
    return np.where(flat_x, np.nan, r)


def _window_stats(xs: list[np.ndarray], ys: list[np.ndarray]) -> np.ndarray:
    """Per-window sufficient statistics ``[W, 6]`` of tokens centred on the global means."""
    lengths = np.array([x.size for x in xs], dtype=np.int64)
    if lengths.sum() == 0:
        return np.zeros((len(xs), 6))
    x, y = np.concatenate(xs), np.concatenate(ys)
    x, y = x - x.mean(), y - y.mean()
    win = np.repeat(np.arange(len(xs)), lengths)
    cols = [np.ones_like(x), x, y, x * x, y * y, x * y]
    return np.stack([np.bincount(win, weights=c, minlength=len(xs)) for c in cols], axis=1)


def _pearson_inputs(
    truth_windows: Sequence[np.ndarray],
    pred_windows: Sequence[np.ndarray],
    groups: np.ndarray | None,
) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None]:
    """Validated float64 windows (truth, pred) and groups."""
    if len(truth_windows) != len(pred_windows):
        raise ValueError(
            f"{len(truth_windows)} truth windows but {len(pred_windows)} predicted windows"
        )
    xs = [np.asarray(w, dtype=np.float64).reshape(-1) for w in truth_windows]
    ys = [np.asarray(w, dtype=np.float64).reshape(-1) for w in pred_windows]
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if x.size != y.size:
            raise ValueError(f"window {i}: truth has {x.size} tokens but pred has {y.size}")
    if groups is not None:
        groups = np.asarray(groups).reshape(-1)
        if groups.size != len(xs):
            raise ValueError(f"{groups.size} groups for {len(xs)} windows")
        if not np.issubdtype(groups.dtype, np.integer) and groups.size:
            raise ValueError("groups must be integers")
        groups = groups.astype(np.int64)
        if groups.size and groups.min() < -1:
            raise ValueError("groups must be >= -1 (-1 marks contrast windows)")
    return xs, ys, groups


def _window_draws(
    rng: np.random.Generator, n_boot: int, sizes: tuple[int, ...], n_windows: int
) -> np.ndarray:
    """Resampled window counts ``[n_boot, W]``: plain (``sizes`` empty), or stratified by
    group, the windows of each group being one contiguous block of ``sizes``."""
    if not sizes:
        return _counts(_draws(rng, n_boot, n_windows), n_windows)
    starts = np.cumsum((0, *sizes[:-1]))
    idx = [start + _draws(rng, n_boot, size) for start, size in zip(starts, sizes, strict=True)]
    return _counts(np.concatenate(idx, axis=1), n_windows)


@lru_cache(maxsize=256)
def _cached_window_draws(
    n_boot: int, sizes: tuple[int, ...], n_windows: int, seed: int
) -> np.ndarray:
    """:func:`_window_draws` for a layout of group sizes, computed once (read-only): the
    draws depend on the sizes only, so latents with the same numbers of windows per group
    share them."""
    counts = _window_draws(np.random.default_rng(seed), n_boot, sizes, n_windows)
    counts.flags.writeable = False
    return counts


def pearson_metrics(
    truth_windows: Sequence[np.ndarray],
    pred_windows: Sequence[np.ndarray],
    groups: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Pearson correlation of predicted and true per-token activations over all windows.

    The point estimate is the correlation over the concatenated tokens (NaN when either
    side is constant). The interval resamples whole windows with replacement (tokens within
    a window are not independent), each resample's r computed from per-window sufficient
    statistics: the draw counts times the statistics of each group's block of windows.

    ``groups`` (one int per window, e.g. the quantile bin of an activating window, -1 for a
    contrast window) adds ``pearson_q{g}`` (+ ``_lo``, ``_hi``) for every group g >= 0: the
    correlation over the windows of group g TOGETHER WITH all contrast windows (group -1),
    since the contrast windows supply the zeros and one quantile alone has little variance.
    With ``groups`` the bootstrap is stratified: windows are resampled within each group,
    keeping the number of windows per group fixed as designed.
    """
    _check_ci(ci, n_boot)
    xs, ys, groups = _pearson_inputs(truth_windows, pred_windows, groups)
    n_windows = len(xs)
    out: dict[str, float] = {
        "n_windows": float(n_windows),
        "n_tokens": float(sum(x.size for x in xs)),
        "pearson_chance": 0.0,
        "constant_prediction": (
            float(np.ptp(np.concatenate(ys)) == 0) if any(y.size for y in ys) else _NAN
        ),
    }
    subsets: dict[str, np.ndarray] = {"pearson": np.ones(n_windows, dtype=bool)}
    if groups is not None:
        for g in np.unique(groups[groups >= 0]):
            subsets[f"pearson_q{g}"] = (groups == g) | (groups == -1)

    sizes: tuple[int, ...] = ()
    if groups is not None:  # windows in group order: latents with the same mix share draws
        order = np.argsort(groups, kind="stable")
        xs, ys, groups = [xs[i] for i in order], [ys[i] for i in order], groups[order]
        for key in subsets:
            subsets[key] = subsets[key][order]
        labels, counts_per = np.unique(groups, return_counts=True)
        sizes = tuple(int(c) for c in counts_per)
    stats = _window_stats(xs, ys)
    counts = _cached_window_draws(n_boot, sizes, n_windows, seed)
    keys = list(subsets)
    if not sizes:  # no groups (or no windows): one subset, all windows
        reps = _pearson_stats((counts @ stats)[:, None, :])
    else:
        # each group's resampled statistics (its block of windows), then every subset's as
        # the sum of its groups': all groups, or group g with the contrast windows (-1)
        ends = np.cumsum(sizes)
        per_group = {
            int(g): counts[:, e - k : e] @ stats[e - k : e]
            for g, k, e in zip(labels, sizes, ends, strict=True)
        }
        contrast = per_group.get(-1)
        total = np.sum(list(per_group.values()), axis=0)
        sums = [total] + [
            per_group[int(k.removeprefix("pearson_q"))] + (0.0 if contrast is None else contrast)
            for k in keys[1:]
        ]
        reps = _pearson_stats(np.stack(sums, axis=1))
    lo, hi = _percentile_ci(reps, ci)
    lengths = np.array([x.size for x in xs], dtype=np.int64)
    x_all = np.concatenate(xs) if xs else np.empty(0)
    y_all = np.concatenate(ys) if ys else np.empty(0)
    for i, key in enumerate(keys):
        # the tokens of the subset's windows, in window order (one mask, no re-concatenation)
        on = np.repeat(subsets[key], lengths)
        out[key] = _pearson_tokens(x_all[on], y_all[on])
        out[f"{key}_lo"], out[f"{key}_hi"] = float(lo[i]), float(hi[i])
    return out
