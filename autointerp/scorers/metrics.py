"""Per-latent scoring metrics with seeded bootstrap confidence intervals and chance levels.

Every function returns plain floats (a flat ``dict[str, float]`` or a tuple), NaN where a
value is undefined, so that one latent's result is one Parquet row. Confidence intervals
are percentile bootstrap intervals at level ``ci`` (default 95 %) from ``n_boot`` resamples
drawn with ``np.random.default_rng(seed)``: the same inputs and seed give the same interval.
The resamples are vectorised (index matrices of shape ``[n_boot, n]``, counts via
``np.bincount``, metrics as array operations); there is no Python loop over resamples.
Resamples on which a metric is undefined (NaN) are left out of its percentiles.

Keys of :func:`binary_metrics` (the judge answers yes/no on each example):

- ``n``, ``n_pos``, ``n_neg``: examples; examples whose truth is positive / negative.
- ``auroc_from_labels``: 1.0 when no probabilities were given and AUROC was computed from the
  hard yes/no answers used as a score, else 0.0.
- ``accuracy``: fraction of examples answered correctly.
- ``balanced_accuracy``: (TPR + TNR) / 2; NaN with one truth class present (an always-yes
  judge would score 1.0 on an all-positive mix: no chance level makes that informative).
- ``single_class``: 1.0 when the examples hold one truth class only (then balanced accuracy
  and AUROC are NaN; the judge scorers mark such a latent ``skipped``), else 0.0.
- ``precision``: TP / (TP + FP); 0 when nothing is predicted positive but positives exist
  (scikit-learn's ``zero_division=0``); NaN when there are no positives and none predicted.
- ``recall``: TP / n_pos (the true-positive rate); NaN when there are no positives.
- ``f1``: 2 TP / (2 TP + FP + FN); 0 when positives exist but none is predicted; NaN when
  there are no positives and none predicted.
- ``auroc``: area under the ROC curve of P(yes) (ties count one half); NaN with one class.
- ``M_lo``, ``M_hi`` for each metric M above: the bootstrap interval. The bootstrap is
  stratified: positives and negatives are resampled separately, so every resample keeps
  ``n_pos`` and ``n_neg`` (the example mix is fixed by design, not sampled).
- ``M_chance``: the metric of an uninformed judge on this example mix, with p = n_pos / n:
  ``accuracy_chance`` = max(p, 1 - p) (always give the majority answer),
  ``balanced_accuracy_chance`` = 0.5 (NaN with one class),
  ``precision_chance`` = p (always answer yes),
  ``recall_chance`` = 0.5 (coin flip; NaN without positives), ``f1_chance`` = 2p / (1 + p)
  (always answer yes), ``auroc_chance`` = 0.5 (NaN with one class).

Keys of :func:`autointerp.scorers.metrics_pearson.pearson_metrics`: see that module.

Keys of :func:`accuracy_metrics` (k-way choice tasks):

- ``n``: items; ``accuracy`` (+ ``_lo``, ``_hi``: bootstrap over items): fraction correct;
  ``accuracy_chance``: mean over items of 1 / n_choices.

:func:`mean_ci` returns ``(mean, lo, hi)`` of a vector of per-latent values, NaN ignored.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

N_BOOT = 1000
BINARY_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "auroc")
_NAN = float("nan")
# a resample whose variance is below this fraction of its mean square counts as constant
_REL_VAR_TOL = 1e-10


# ----------------------------------------------------------------------------- helpers


def _check_ci(ci: float, n_boot: int) -> None:
    """Reject interval levels outside (0, 1) and non-positive resample counts."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must lie in (0, 1), got {ci}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")


def _draws(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """Resampling indices ``[n_boot, n]`` into ``range(n)``, drawn with replacement."""
    if n == 0:
        return np.empty((n_boot, 0), dtype=np.int64)
    return rng.integers(0, n, size=(n_boot, n))


def _counts(idx: np.ndarray, size: int) -> np.ndarray:
    """Per-row occurrence counts ``[B, size]`` of the values in ``idx`` ``[B, m]``."""
    b = idx.shape[0]
    flat = (np.arange(b, dtype=np.int64)[:, None] * size + idx).ravel()
    return np.bincount(flat, minlength=b * size).reshape(b, size).astype(np.float64)


@lru_cache(maxsize=256)
def _strata_draws(n_pos: int, n_neg: int, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified resamples: how often each positive / negative is drawn (``[n_boot, n_pos]``,
    ``[n_boot, n_neg]``; positives and negatives resampled separately). They depend only on
    the sizes and the seed, so latents with the same example mix share them (computed once,
    read-only; a few hundred mixes cover a run of thousands of latents). Kept as float32: the
    counts, and every sum of them the metrics take, are whole numbers far below 2**24, so
    float32 holds them exactly in half the memory."""
    rng = np.random.default_rng(seed)
    dpos, dneg = _draws(rng, n_boot, n_pos), _draws(rng, n_boot, n_neg)
    cpos = _counts(dpos, n_pos).astype(np.float32)
    cneg = _counts(dneg, n_neg).astype(np.float32)
    for a in (cpos, cneg):
        a.flags.writeable = False
    return cpos, cneg


def _one_hot(values: np.ndarray, k: int, dtype: type = np.float64) -> np.ndarray:
    """``[len(values), k]`` matrix (float64 unless ``dtype``) with a 1 at each value's column."""
    out = np.zeros((len(values), k), dtype=dtype)
    out[np.arange(len(values)), values] = 1.0
    return out


def _percentile_ci(reps: np.ndarray, ci: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of ``reps`` ``[B, m]``, NaN replicates ignored."""
    reps = np.atleast_2d(reps)
    lo = np.full(reps.shape[1], np.nan)
    hi = np.full(reps.shape[1], np.nan)
    alpha = (1.0 - ci) / 2.0
    nan = np.isnan(reps)
    clean = ~nan.any(axis=0)
    if clean.any():  # the common case: one vectorised quantile over every clean column
        q = np.quantile(reps[:, clean], [alpha, 1.0 - alpha], axis=0)
        lo[clean], hi[clean] = q[0], q[1]
    for j in np.flatnonzero(~clean & ~nan.all(axis=0)):
        col = reps[~nan[:, j], j]
        lo[j], hi[j] = np.quantile(col, [alpha, 1.0 - alpha])
    return lo, hi


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` elementwise, NaN where ``den`` is 0."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


# ----------------------------------------------------------------------------- binary


def _binary_from_counts(
    tp: np.ndarray, fp: np.ndarray, n_pos: int, n_neg: int
) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, precision, recall and F1 from confusion counts.

    ``tp`` and ``fp`` are arrays (one entry per resample); FN = n_pos - TP, TN = n_neg - FP.
    """
    tp = np.asarray(tp, float)
    fp = np.asarray(fp, float)
    fn, tn = n_pos - tp, n_neg - fp
    tpr = _safe_div(tp, np.full_like(tp, n_pos))
    tnr = _safe_div(tn, np.full_like(tn, n_neg))
    # undefined with one truth class present: a constant answer would score 1 or 0
    bal = (tpr + tnr) / 2.0 if n_pos and n_neg else np.full(tp.shape, np.nan)
    precision = _safe_div(tp, tp + fp)
    if n_pos:
        precision = np.where(tp + fp == 0, 0.0, precision)
    return {
        "accuracy": _safe_div(tp + tn, np.full_like(tp, n_pos + n_neg)),
        "balanced_accuracy": bal,
        "precision": precision,
        "recall": tpr,
        "f1": _safe_div(2.0 * tp, 2.0 * tp + fp + fn),
    }


def _auroc_counts(pos_counts: np.ndarray, neg_counts: np.ndarray) -> np.ndarray:
    """AUROC per row from weights of positives and negatives on sorted distinct scores.

    ``pos_counts``, ``neg_counts``: ``[B, k]``, weight of each of the k distinct score values
    (ascending) among positives / negatives. Equals the pairwise (Mann-Whitney) formulation
    ``Cpos @ M @ Cneg / (n_pos n_neg)`` with ``M[i, j] = 1[s_i > s_j] + 0.5 1[s_i == s_j]``,
    in O(B k) instead of O(n_pos n_neg) memory.
    """
    neg_below = np.cumsum(neg_counts, axis=1) - neg_counts
    wins = np.sum(pos_counts * (neg_below + 0.5 * neg_counts), axis=1)
    return _safe_div(wins, pos_counts.sum(axis=1) * neg_counts.sum(axis=1))


def _binary_chance(n_pos: int, n_neg: int) -> dict[str, float]:
    """Chance level of each binary metric on an example mix of n_pos positives, n_neg negatives."""
    n = n_pos + n_neg
    if n == 0:
        return dict.fromkeys(BINARY_METRICS, _NAN)
    p = n_pos / n
    return {
        "accuracy": max(p, 1.0 - p),
        "balanced_accuracy": 0.5 if n_pos and n_neg else _NAN,
        "precision": p,
        "recall": 0.5 if n_pos else _NAN,
        "f1": 2.0 * p / (1.0 + p),
        "auroc": 0.5 if n_pos and n_neg else _NAN,
    }


def _binary_inputs(
    truth: np.ndarray, pred: np.ndarray, prob: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated 1-D bool truth, bool pred and float score (``prob``, or ``pred`` as 0/1)."""
    truth = np.asarray(truth, dtype=bool).reshape(-1)
    pred = np.asarray(pred, dtype=bool).reshape(-1)
    if truth.shape != pred.shape:
        raise ValueError(f"truth has {truth.size} entries but pred has {pred.size}")
    score = pred.astype(np.float64) if prob is None else np.asarray(prob, float).reshape(-1)
    if score.shape != truth.shape:
        raise ValueError(f"truth has {truth.size} entries but prob has {score.size}")
    if not np.all(np.isfinite(score)):
        raise ValueError("prob must be finite")
    return truth, pred, score


def binary_metrics(
    truth: np.ndarray,
    pred: np.ndarray,
    prob: np.ndarray | None = None,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Detection metrics of yes/no answers ``pred`` (and P(yes) ``prob``) against ``truth``.

    Point estimates are the plain metrics (equal to scikit-learn's ``accuracy_score``,
    ``balanced_accuracy_score``, ``precision_score(zero_division=0)``, ``recall_score``,
    ``f1_score(zero_division=0)`` and ``roc_auc_score`` wherever those are defined; where
    scikit-learn substitutes 0 for an undefined value without positives, NaN is returned).
    Intervals come from a stratified bootstrap (positives and negatives resampled
    separately). Without ``prob`` AUROC is that of the hard labels. See the module docstring
    for every key and the chance levels.
    """
    _check_ci(ci, n_boot)
    truth, pred, score = _binary_inputs(truth, pred, prob)
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    out: dict[str, float] = {
        "n": float(n_pos + n_neg),
        "n_pos": float(n_pos),
        "n_neg": float(n_neg),
        "auroc_from_labels": 1.0 if prob is None else 0.0,
        "single_class": float(n_pos + n_neg > 0 and (n_pos == 0 or n_neg == 0)),
    }
    values, inv = np.unique(score, return_inverse=True)
    k = values.size
    pos_pred, neg_pred = pred[truth], pred[~truth]
    pos_val, neg_val = inv[truth], inv[~truth]

    point = _binary_from_counts(
        pos_pred.sum(keepdims=True), neg_pred.sum(keepdims=True), n_pos, n_neg
    )
    point["auroc"] = _auroc_counts(
        np.bincount(pos_val, minlength=k)[None].astype(float),
        np.bincount(neg_val, minlength=k)[None].astype(float),
    )

    cpos, cneg = _strata_draws(n_pos, n_neg, n_boot, seed)
    # whole-number sums in float32 (exact), then float64 as before
    reps = _binary_from_counts(
        (cpos @ pos_pred.astype(np.float32)).astype(np.float64),
        (cneg @ neg_pred.astype(np.float32)).astype(np.float64),
        n_pos,
        n_neg,
    )
    # the weight of each distinct score per resample: draw counts times a one-hot of the
    # examples' scores (integers, so exactly the bincount of the drawn scores)
    reps["auroc"] = _auroc_counts(
        (cpos @ _one_hot(pos_val, k, np.float32)).astype(np.float64),
        (cneg @ _one_hot(neg_val, k, np.float32)).astype(np.float64),
    )
    lo, hi = _percentile_ci(np.stack([reps[m] for m in BINARY_METRICS], axis=1), ci)

    chance = _binary_chance(n_pos, n_neg)
    for i, m in enumerate(BINARY_METRICS):
        out[m] = float(point[m][0])
        out[f"{m}_lo"], out[f"{m}_hi"] = float(lo[i]), float(hi[i])
        out[f"{m}_chance"] = chance[m]
    return out


# ----------------------------------------------------------------------------- means


@lru_cache(maxsize=8)
def _cached_mean_draws(n_boot: int, n: int, seed: int) -> np.ndarray:
    draws = _draws(np.random.default_rng(seed), n_boot, n)
    draws.flags.writeable = False
    return draws


def _mean_draws(n_boot: int, n: int, seed: int) -> np.ndarray:
    """:func:`_draws` of a fresh generator seeded ``seed``; kept (read-only) when small enough,
    since a summary or a report takes the mean of many columns of the same length."""
    if n_boot * n <= 1 << 22:
        return _cached_mean_draws(n_boot, n, seed)
    return _draws(np.random.default_rng(seed), n_boot, n)


def mean_ci(
    values: np.ndarray, *, n_boot: int = N_BOOT, seed: int = 0, ci: float = 0.95
) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN ignored) and its bootstrap interval: ``(mean, lo, hi)``.

    All-NaN or empty input gives ``(nan, nan, nan)``.
    """
    _check_ci(ci, n_boot)
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return _NAN, _NAN, _NAN
    reps = v[_mean_draws(n_boot, v.size, seed)].mean(axis=1)
    lo, hi = _percentile_ci(reps[:, None], ci)
    return float(v.mean()), float(lo[0]), float(hi[0])


def accuracy_metrics(
    correct: np.ndarray,
    n_choices: int | np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
    ci: float = 0.95,
) -> dict[str, float]:
    """Accuracy of a k-way choice task, its bootstrap interval over items, and chance.

    ``correct``: bool per item; ``n_choices``: options per item (one int for all items, or
    one per item). ``accuracy_chance`` is the mean over items of 1 / n_choices.
    """
    _check_ci(ci, n_boot)
    correct = np.asarray(correct, dtype=bool).reshape(-1)
    k = np.broadcast_to(np.asarray(n_choices, dtype=np.float64), correct.shape)
    if correct.size and np.any(k < 1):
        raise ValueError("n_choices must be >= 1")
    acc, lo, hi = mean_ci(correct.astype(np.float64), n_boot=n_boot, seed=seed, ci=ci)
    chance = float(np.mean(1.0 / k)) if correct.size else _NAN
    return {
        "n": float(correct.size),
        "accuracy": acc,
        "accuracy_lo": lo,
        "accuracy_hi": hi,
        "accuracy_chance": chance,
    }
