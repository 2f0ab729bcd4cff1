"""Cue judges of the shortcut audit (scorers/audit.py): explanation-free judges that answer
from what a judge scorer showed alone, and the logistic-regression ceiling over all their cues.

Every judge is cross-fitted by latent: its threshold and direction (or weights) are chosen on
the OTHER latents' items (folds of latents), then applied to this latent's items, so a cue
judge is never tuned on the latent it is scored on.
"""

from __future__ import annotations

import numpy as np
import polars as pl

CEILING = "ceiling"
CHANCE = 0.5
N_FOLDS = 5
MAX_FIT_ROWS = 100_000  # items the ceiling's regression is fitted on per fold (seeded sample)


# -- cues ----------------------------------------------------------------------------------


def cue_matrix(
    items: pl.DataFrame, log_counts: dict[str, np.ndarray | None] | None = None
) -> tuple[list[str], np.ndarray]:
    """(cue names, ``[n_items, n_cues]`` values) of the items' shown columns;
    ``log_counts``: per hookpoint, log(1 + count) of each token id (the frequency cue is
    left out when a hookpoint has none)."""
    n = items.height
    names = ["shown_tokens", "shown_special"]
    cols = [
        items["shown_tokens"].fill_null(0).to_numpy().astype(np.float64),
        items["shown_special"].fill_null(0).to_numpy().astype(np.float64),
    ]
    hl = items["highlighted"]
    if hl.is_null().all():
        return names, np.stack(cols, axis=1)
    lengths = hl.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = np.asarray(hl.to_arrow().flatten().fill_null(0), dtype=np.int64)
    row = np.repeat(np.arange(n), lengths)
    count = lengths.astype(np.float64)
    # runs: a highlighted offset whose predecessor is not highlighted starts a run
    starts = np.ones(len(flat), dtype=bool)
    same_row = np.concatenate([[False], row[1:] == row[:-1]])
    starts &= ~(same_row & (flat == np.concatenate([[-10], flat[:-1]]) + 1))
    runs = np.bincount(row[starts], minlength=n).astype(np.float64)
    has = lengths > 0
    first = np.full(n, -1.0)
    last = np.full(n, -1.0)
    mean = np.full(n, -1.0)
    if len(flat):
        ends = np.cumsum(lengths)
        first[has] = flat[(ends - lengths)[has]]
        last[has] = flat[ends[has] - 1]
        mean[has] = (np.bincount(row, weights=flat, minlength=n) / np.maximum(lengths, 1))[has]
    names += ["n_highlighted", "n_highlight_runs", "first_highlight", "last_highlight"]
    names += ["mean_highlight"]
    cols += [count, runs, first, last, mean]
    hps = items["hookpoint"].to_numpy()
    if log_counts and all(log_counts.get(h) is not None for h in np.unique(hps)):
        ids = np.asarray(items["highlighted_ids"].to_arrow().flatten().fill_null(0), np.int64)
        freq = np.zeros(len(ids))
        for h in np.unique(hps):
            table = log_counts[h]
            on = hps[row] == h
            freq[on] = table[np.clip(ids[on], 0, len(table) - 1)]
        mean_freq = np.bincount(row, weights=freq, minlength=n) / np.maximum(lengths, 1)
        fill = float(np.median(mean_freq[has])) if has.any() else 0.0
        names.append("highlight_log_frequency")
        cols.append(np.where(has, mean_freq, fill))
    width = max(int(items["shown_tokens"].fill_null(0).max() or 0), int(flat.max(initial=-1)) + 1)
    at = np.zeros((n, width))
    at[row, flat] = 1.0
    names += [f"highlight_at_{o}" for o in range(width)]
    return names, np.concatenate([np.stack(cols, axis=1), at], axis=1)


# -- cue judges ------------------------------------------------------------------------------


def best_threshold(x: np.ndarray, y: np.ndarray) -> tuple[float, bool, float]:
    """(threshold, direction, pooled balanced accuracy) of the best rule "yes iff x >= t"
    (direction True) or "yes iff x < t" (False) on ``x``, ``y``; (inf, True, 0.5) when one
    class is missing. One sort (a count per value for whole-number cues): at each distinct
    value, the positives and negatives below it."""
    n_pos = int(np.count_nonzero(y))
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return float("inf"), True, CHANCE
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
    if hi - lo <= max(len(x), 1024) and np.array_equal(x, np.floor(x)):
        # whole-number cues (counts, offsets, 0/1): counted per value, no sort; the same
        # distinct values in the same order, the same counts below each
        xi = (x - lo).astype(np.int64)
        per_value = np.bincount(xi)
        present = np.flatnonzero(per_value)
        pos = np.bincount(xi, weights=y).astype(np.int64)  # sums of 1.0: exact
        first = np.r_[0, np.cumsum(per_value)][present]  # how many values are below
        pos_below = np.r_[0, np.cumsum(pos)][present]
        values = present + lo
    else:
        order = np.argsort(x, kind="stable")  # (quicksort: 10x slower on the cues' many ties)
        xs, ys = x[order], y[order]
        first = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])  # where each distinct value starts
        pos_below = np.r_[0, np.cumsum(ys)][first]
        values = xs[first]
    neg_below = first - pos_below
    tpr = 1.0 - pos_below / n_pos
    fpr = 1.0 - neg_below / n_neg
    ba = 0.5 * (tpr + 1.0 - fpr)
    k = int(np.argmax(np.maximum(ba, 1.0 - ba)))
    return float(values[k]), bool(ba[k] >= 1.0 - ba[k]), float(max(ba[k], 1.0 - ba[k]))


def picks(score: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """Per window, the share of the pick it gets: 1 for the prompt's unique top ``score``,
    1/k for each of k tied tops, else 0 (an uninformative cue picks at chance)."""
    top = np.full(prompt.max() + 1 if len(prompt) else 0, -np.inf)
    np.maximum.at(top, prompt, score)
    is_top = score >= top[prompt]
    ties = np.bincount(prompt, weights=is_top.astype(np.float64), minlength=len(top))
    return np.where(is_top, 1.0 / ties[prompt], 0.0)


def latent_ba(pred: np.ndarray, y: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
    """Balanced accuracy of (possibly fractional) yes-predictions per group; NaN where the
    group lacks a class."""
    yf = y.astype(np.float64)
    p = np.bincount(group, weights=yf, minlength=n_groups)
    q = np.bincount(group, weights=1.0 - yf, minlength=n_groups)
    tp = np.bincount(group, weights=pred * yf, minlength=n_groups)
    tn = np.bincount(group, weights=(1.0 - pred) * (1.0 - yf), minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        ba = 0.5 * (tp / p + tn / q)
    return np.where((p > 0) & (q > 0), ba, np.nan)


def _ceiling_model(seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(),
        LogisticRegression(class_weight="balanced", max_iter=500, random_state=seed),
    )


def audit_items(
    names: list[str],
    x: np.ndarray,
    y: np.ndarray,
    group: np.ndarray,
    prompt: np.ndarray | None,
    seed: int = 0,
    n_folds: int = N_FOLDS,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Cross-fitted balanced accuracy per group (latent) of every cue judge and of the
    ceiling: ``({cue: [n_groups]}, {cue: [rule per group]})``. ``prompt`` (intruder): the
    prompt of each window (unique over groups); cue judges then pick one window per prompt."""
    n_groups = int(group.max()) + 1 if len(group) else 0
    out = {c: np.full(n_groups, np.nan) for c in [*names, CEILING]}
    rules = {c: np.full(n_groups, "", dtype=object) for c in out}
    if n_groups < 2:
        return out, rules
    x = np.asfortranarray(x, dtype=np.float64)  # cue columns contiguous
    k = min(n_folds, n_groups)
    fold_of = np.random.default_rng(seed).permutation(n_groups) % k
    fold = fold_of[group]
    for f in range(k):
        tr, te = fold != f, fold == f
        held = np.flatnonzero(fold_of == f)
        y_tr, p_tr = y[tr], (prompt[tr] if prompt is not None else None)
        for j, name in enumerate(names):
            col = x[:, j]  # contiguous (Fortran order): masks of a column, not of the matrix
            if prompt is None:
                t, up, _ = best_threshold(col[tr], y_tr)
                pred = (col[te] >= t) if up else (col[te] < t)
                rule = f"yes iff {name} {'>=' if up else '<'} {t:g}"
                pred = pred.astype(np.float64)
            else:
                acc = {s: float(np.sum(picks(s * col[tr], p_tr) * y_tr)) for s in (1, -1)}
                sign = 1 if acc[1] >= acc[-1] else -1
                pred = picks(sign * col[te], prompt[te])
                rule = f"pick the {'highest' if sign > 0 else 'lowest'} {name}"
            ba = latent_ba(pred, y[te], group[te], n_groups)
            out[name][held] = ba[held]
            rules[name][held] = rule
        if y_tr.all() or not y_tr.any():
            continue
        fit = np.flatnonzero(tr)
        if len(fit) > MAX_FIT_ROWS:  # a seeded subsample: the fit costs little more than it
            fit = np.sort(np.random.default_rng(seed + f).choice(fit, MAX_FIT_ROWS, False))
        model = _ceiling_model(seed).fit(x[fit], y[fit])
        if prompt is None:
            pred = model.predict(x[te]).astype(np.float64)
        else:
            pred = picks(model.decision_function(x[te]), prompt[te])
        out[CEILING][held] = latent_ba(pred, y[te], group[te], n_groups)[held]
        rules[CEILING][held] = "logistic regression over all cues, fitted on other latents"
    return out, rules
