"""The shortcut audit: could a judge score well WITHOUT the explanation?

For every judge scorer that records what it showed (detection, fuzzing, intruder: the
``shown_*`` and ``highlighted*`` columns of ``scores/<scorer>.examples.parquet``), explanation-free
"cue judges" answer from the items alone: one per cue (window length, special tokens shown,
number / runs / positions of highlights, whether offset ``o`` is highlighted, how frequent
the highlighted tokens are in the cache), and a logistic regression over all cues (the
explanation-free ceiling). Each is cross-fitted by latent: its threshold and direction (or
weights) are chosen on the OTHER latents' items (folds of latents), then applied to this
latent's items, so a cue judge is never tuned on the latent it is scored on.

A binary judge scorer's cue judge answers yes/no per window; intruder's picks the window with
the highest (or lowest) cue per prompt. Both are scored by balanced accuracy over the windows
of each latent, chance 0.5 (an intruder pick at chance 1/n is balanced accuracy 0.5).
Written once at the end of the score stage (by the report, beside its detail files, when the
pipeline runs one next) to ``scores/<scorer>.audit.parquet`` (columns in docs/score.md); a
scorer whose ceiling beats chance by more than ``LEAK_MARGIN`` is flagged as leaking in the
summary and the report.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.scorers.frequency import token_log_counts
from autointerp.scorers.metrics import mean_ci

log = logging.getLogger(__name__)
AUDITED = ("detection", "fuzzing", "intruder")
CEILING = "ceiling"
CHANCE = 0.5
LEAK_MARGIN = 0.05
N_FOLDS = 5
MAX_LATENTS = 5000  # latents audited per scorer config (a seeded sample beyond)
MAX_FIT_ROWS = 100_000  # items the ceiling's regression is fitted on per fold (seeded sample)
AUDIT_SCHEMA: dict[str, pl.DataType] = {
    "scorer": pl.String(),
    "config_hash": pl.String(),
    "hookpoint": pl.String(),
    "latent": pl.Int32(),
    "cue": pl.String(),
    "rule": pl.String(),
    "balanced_accuracy": pl.Float64(),
    "chance": pl.Float64(),
    "n_examples": pl.Int64(),
    "n_positive": pl.Int64(),
}
NEEDED = ["shown_tokens", "shown_special", "highlighted", "highlighted_ids"]


def audit_path(run_dir: Path, scorer: str) -> Path:
    return Path(run_dir) / "scores" / f"{scorer}.audit.parquet"


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


# -- files -------------------------------------------------------------------------------


def _items(path: Path, seed: int = 0, max_latents: int = MAX_LATENTS) -> pl.DataFrame | None:
    """The items of every (config, hookpoint, latent), once (the first explanation's: items
    never depend on the explanation), or None when the file lacks the shown columns. Past
    ``max_latents`` latents per config, a seeded sample of that many (memory stays bounded on
    runs of 10^6 latents; a leak of the construction shows on any few thousand)."""
    schema = pl.read_parquet_schema(path)
    if any(c not in schema for c in NEEDED):
        return None
    key = ["config_hash", "hookpoint", "latent"]
    order = [*key, "prompt", *(["position"] if "position" in schema else [])]
    cols = [*order, "explanation_id", "truth", *NEEDED]
    scan = pl.scan_parquet(path).select(cols)
    first = (
        scan.group_by(key)
        .agg(pl.col("explanation_id").min().alias("_first"))
        .with_columns(_rank=pl.struct(key).hash(seed).rank("ordinal").over("config_hash"))
        .filter(pl.col("_rank") <= max_latents)
        .drop("_rank")
    )
    return (
        scan.join(first, on=key)
        .filter(pl.col("explanation_id") == pl.col("_first"))
        .drop("_first")
        .collect()
        # one order whatever the order of the rows in the file (part files are appended in
        # the order the workers wrote them): the fits, and so the audit, are reproducible
        .sort(order, maintain_order=True)
        .select(c for c in cols if c != "position")
    )


def audit_scorer(run_dir: Path, scorer: str, seed: int = 0) -> pl.DataFrame | None:
    """The audit rows of one scorer's examples file (None when it has none to audit)."""
    path = Path(run_dir) / "scores" / f"{scorer}.examples.parquet"
    if not path.is_file():
        return None
    items = _items(path, seed)
    if items is None or items.height == 0:
        return None
    frames = []
    counts = {hp: token_log_counts(run_dir, hp) for hp in items["hookpoint"].unique().to_list()}
    for (chash,), sub in items.group_by(["config_hash"], maintain_order=True):
        names, x = cue_matrix(sub, counts)
        keys = sub.select("hookpoint", "latent")
        gkeys = keys.unique(maintain_order=True)
        group = (
            keys.join(gkeys.with_row_index("_g"), on=["hookpoint", "latent"], how="left")["_g"]
            .to_numpy()
            .astype(np.int64)
        )
        y = sub["truth"].to_numpy().astype(bool)
        prompt = None
        if scorer == "intruder":
            prompt = (
                sub.select(pl.struct("hookpoint", "latent", "prompt").rank("dense"))
                .to_series()
                .to_numpy()
                .astype(np.int64)
                - 1
            )
        ba, rules = audit_items(names, x, y, group, prompt, seed=seed)
        n_ex = np.bincount(group, minlength=gkeys.height)
        n_pos = np.bincount(group, weights=y.astype(np.float64), minlength=gkeys.height)
        for cue, values in ba.items():
            frames.append(
                gkeys.with_columns(
                    pl.lit(scorer).alias("scorer"),
                    pl.lit(chash).alias("config_hash"),
                    pl.lit(cue).alias("cue"),
                    pl.Series("rule", rules[cue].tolist(), dtype=pl.String),
                    pl.Series("balanced_accuracy", values, dtype=pl.Float64),
                    pl.lit(CHANCE).alias("chance"),
                    pl.Series("n_examples", n_ex, dtype=pl.Int64),
                    pl.Series("n_positive", n_pos.astype(np.int64), dtype=pl.Int64),
                )
            )
    if not frames:
        return None
    return (
        pl.concat(frames)
        .select([pl.col(c).cast(t) for c, t in AUDIT_SCHEMA.items()])
        .with_columns(pl.col("balanced_accuracy").fill_nan(None))
    )


def run_audit(
    run_dir: str | Path, scorers: Sequence[str] | None = None, seed: int = 0
) -> dict[str, Path]:
    """Audit every judge scorer with an examples file; returns ``{scorer: audit path}``. An
    audit newer than its examples file is kept as it is (a resumed run that scored nothing
    rewrites nothing)."""
    run_dir = Path(run_dir)
    out = {}
    for name in scorers or AUDITED:
        if name not in AUDITED:
            continue
        path = audit_path(run_dir, name)
        examples = run_dir / "scores" / f"{name}.examples.parquet"
        fresh = path.is_file() and examples.is_file()
        if fresh and path.stat().st_mtime_ns >= examples.stat().st_mtime_ns:
            out[name] = path
            continue
        df = audit_scorer(run_dir, name, seed)
        if df is None:
            continue
        tmp = path.with_suffix(".tmp")
        df.write_parquet(tmp, compression="zstd")
        tmp.replace(path)
        out[name] = path
    return out


# -- summary -------------------------------------------------------------------------------

SUMMARY_COLUMNS = ["scorer", "config_hash", "cue", "mean", "ci_lo", "ci_hi", "chance", "latents"]


def audit_summary(
    run_dir: str | Path, scorers: Sequence[str] | None = None, seed: int = 0
) -> pl.DataFrame:
    """Per (scorer, config, cue): mean balanced accuracy over latents with a bootstrap CI."""
    rows = []
    for name in AUDITED:
        path = audit_path(Path(run_dir), name)
        if (scorers and name not in scorers) or not path.is_file():
            continue
        df = pl.read_parquet(path)
        for (chash, cue), g in df.group_by(["config_hash", "cue"], maintain_order=True):
            values = g["balanced_accuracy"].drop_nulls().to_numpy().astype(np.float64)
            mean, lo, hi = mean_ci(values, seed=seed)
            rows.append(
                {
                    "scorer": name,
                    "config_hash": chash,
                    "cue": cue,
                    "mean": mean,
                    "ci_lo": lo,
                    "ci_hi": hi,
                    "chance": CHANCE,
                    "latents": len(values),
                }
            )
    if not rows:
        return pl.DataFrame(schema={c: pl.String for c in SUMMARY_COLUMNS})
    return pl.DataFrame(rows)


def verdicts(summary: pl.DataFrame) -> list[dict[str, object]]:
    """Per (scorer, config): the ceiling, the strongest single cue, and whether it leaks."""
    out = []
    if summary.is_empty():
        return out
    for (name, chash), g in summary.group_by(["scorer", "config_hash"], maintain_order=True):
        ceil = g.filter(pl.col("cue") == CEILING)
        single = g.filter(pl.col("cue") != CEILING).sort("mean", descending=True, nulls_last=True)
        c = ceil.row(0, named=True) if ceil.height else None
        s = single.row(0, named=True) if single.height else None
        worst = max(
            (r["mean"] for r in (c, s) if r is not None and r["mean"] == r["mean"]),
            default=float("nan"),
        )
        out.append(
            {
                "scorer": name,
                "config_hash": chash,
                "ceiling": c,
                "max_single": s,
                "leaking": bool(worst == worst and worst > CHANCE + LEAK_MARGIN),
            }
        )
    return out


def _ci(r: dict[str, object] | None) -> str:
    if r is None:
        return "n/a"
    return f"{r['mean']:.3f} [{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]"


def format_audit(summary: pl.DataFrame) -> list[str]:
    """Plain-text lines: per scorer, the explanation-free ceiling and strongest single cue."""
    lines = []
    for v in verdicts(summary):
        s = v["max_single"]
        head = f"shortcut audit {v['scorer']:<10} {str(v['config_hash'])[:6]:<7} "
        audited = v["ceiling"]["latents"] if v["ceiling"] else 0
        if not audited:  # cues are fitted on other latents: one latent cannot be audited
            lines.append(head + "not audited: it needs 2 or more scored latents (--latents)")
            continue
        word = (
            "LEAKING: an explanation-free judge beats chance by more than "
            f"{LEAK_MARGIN:.2f}; its score partly measures the cue, not the explanation"
            if v["leaking"]
            else f"no leak found (within chance + {LEAK_MARGIN:.2f})"
        )
        lines.append(
            f"{head}explanation-free ceiling {_ci(v['ceiling'])}, strongest cue "
            f"{s['cue'] if s else 'n/a'} {_ci(s)} (balanced accuracy, chance {CHANCE}; "
            f"{audited} latents): {word}"
        )
    return lines
