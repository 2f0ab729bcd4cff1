"""The shortcut audit's summary: per scorer, the explanation-free ceiling and the strongest
single cue with bootstrap CIs, and whether the scorer leaks (scorers/audit.py writes the rows)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.scorers.audit import AUDITED, audit_path
from autointerp.scorers.audit_cues import CEILING, CHANCE
from autointerp.scorers.metrics import mean_ci

LEAK_MARGIN = 0.05  # a ceiling above chance + this flags the scorer as leaking

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
