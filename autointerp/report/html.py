"""HTML and the browser's data files, from the tables of ``data`` (templates in ``assets/``).

The page works from ``file://`` (no server): data are ``.js`` files that call a function the
page defines (JSONP style), because Chromium blocks ``fetch()`` of local files. The index table
is one file; per-latent details are chunk files loaded by a ``<script>`` tag on demand.
"""

from __future__ import annotations

import html
import json
import math
from functools import lru_cache
from pathlib import Path
from string import Template
from typing import Any

import polars as pl

ASSETS = Path(__file__).parent / "assets"


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


@lru_cache(maxsize=1 << 16)
def _esc_token(token: Any) -> str:
    # tokens repeat: each vocabulary entry escaped once
    return html.escape("" if token is None else str(token))


def window_html(strings: list[str], norm: list[int], activations: list[float]) -> str:
    """A window's tokens, HTML-escaped, each firing token in a ``<mark>`` whose opacity is its
    ``activations_norm`` / 10 (the raw activation in its title)."""
    if not len(strings) == len(norm) == len(activations):
        raise ValueError("a window's strings, levels and activations differ in length")
    out = list(map(_esc_token, strings))
    for i, level in enumerate(norm):
        if level > 0:  # few tokens of a window fire
            act = activations[i]
            out[i] = f'<mark style="--a:{level / 10:.1f}" title="{act:.3g}">{out[i]}</mark>'
    return "".join(out)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else esc(v)


def table(rows: list[dict[str, Any]], columns: list[str], cls: str = "") -> str:
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def summary_html(
    summary: dict[str, Any], scores: pl.DataFrame, audit: pl.DataFrame | None = None
) -> str:
    """The run summary: hookpoints, explanation counts, LLM usage, per-scorer means, and the
    shortcut audit (``audit``: ``scorers.audit_summary.audit_summary``)."""
    parts = ["<h3>Model and coder</h3>"]
    parts.append(
        table(
            summary["hookpoints"],
            ["hookpoint", "model", "coder", "coder_format", "n_latents", "n_tokens", "ctx_len"],
        )
    )
    parts.append("<h3>Explanations (selected rows)</h3>")
    parts.append(
        table(summary["explainers"], ["explainer", "latents", "ok", "skipped", "failed"])
        if summary["explainers"]
        else "<p>No explanations yet.</p>"
    )
    parts.append("<h3>LLM usage (llm_usage.jsonl)</h3>")
    stages = summary["llm_stages"]
    if stages:
        cols = [c for c in ("stage", "runs", "requests", "cached", "errors", "prompt_tokens",
                            "completion_tokens", "cost_usd") if c in stages[0]]  # fmt: skip
        total = {"stage": "total", **summary["llm_total"]}
        parts.append(table([*stages, total], cols))
        parts.append(f"<p>Models: {esc(', '.join(summary['llm_models']))}</p>")
    else:
        parts.append("<p>No LLM usage recorded.</p>")
    parts.append("<h3>Scores (mean over latents, 95% bootstrap CI, mean chance level)</h3>")
    if scores.is_empty():
        parts.append("<p>No scores yet.</p>")
    else:
        control = "control_mean" in scores.columns  # a random-coder / random-model floor
        rows = [
            {
                **r,
                "config_hash": str(r["config_hash"])[:8],
                "set": str(r.get("explanation_set"))[:8],
                "judge": str(r.get("judge"))
                + (f" @ {r['judge_endpoint']}" if r.get("judge_endpoint") else ""),
                "mean [95% CI]": f"{_fmt(r['mean'])} [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]",
                **(
                    {
                        "control mean [95% CI]": f"{_fmt(r['control_mean'])} "
                        f"[{_fmt(r['control_ci_lo'])}, {_fmt(r['control_ci_hi'])}]"
                    }
                    if control
                    else {}
                ),
            }
            for r in scores.to_dicts()
        ]
        cols = ["scorer", "explainer", "set", "judge", "config_hash", "metric",
                "mean [95% CI]", "n", "chance", "scored", "skipped", "failed",
                "examples_lost"]  # fmt: skip
        if control:
            cols[8:8] = ["control", "control mean [95% CI]", "control_n"]
        parts.append(table(rows, cols, "scores"))
    if audit is not None and not audit.is_empty():
        parts.append(audit_html(audit))
    return "\n".join(parts)


def audit_html(audit: pl.DataFrame) -> str:
    """The shortcut audit beside the scores: per scorer, the explanation-free ceiling and the
    strongest single cue (mean balanced accuracy over latents, 95% CI), and the verdict."""
    from autointerp.scorers.audit_cues import CHANCE
    from autointerp.scorers.audit_summary import LEAK_MARGIN, verdicts

    def ci(r: dict[str, Any] | None) -> str:
        return "n/a" if r is None else f"{_fmt(r['mean'])} [{_fmt(r['ci_lo'])}, {_fmt(r['ci_hi'])}]"

    rows = []
    for v in verdicts(audit):
        c, s = v["ceiling"], v["max_single"]
        rows.append(
            {
                "scorer": v["scorer"],
                "config_hash": str(v["config_hash"])[:8],
                "ceiling [95% CI]": ci(c),
                "strongest cue": s["cue"] if s else "n/a",
                "cue [95% CI]": ci(s),
                "chance": CHANCE,
                "latents": c["latents"] if c else 0,
                "verdict": "not audited: it needs 2 or more scored latents"
                if not (c and c["latents"])
                else "LEAKING: an explanation-free judge beats chance by more than "
                f"{LEAK_MARGIN}; the score partly measures the cue"
                if v["leaking"]
                else f"no leak found (within chance + {LEAK_MARGIN})",
            }
        )
    cols = ["scorer", "config_hash", "ceiling [95% CI]", "strongest cue", "cue [95% CI]",
            "chance", "latents", "verdict"]  # fmt: skip
    head = (
        "<h3>Shortcut audit (explanation-free cue judges on the items each judge was shown; "
        "balanced accuracy, cross-fitted on other latents)</h3>"
    )
    return head + table(rows, cols, "audit")


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_js(path: Path, name: str, payload: Any, assign: bool = False) -> Path:
    """``window.<name>(<payload JSON>);``, or ``window.<name> = <payload JSON>;`` with
    ``assign`` (``</`` escaped so no text can close a tag)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = text.replace("</", "<\\/")
    line = f"window.{name} = {text};" if assign else f"window.{name}({text});"
    path.write_text(line + "\n", encoding="utf-8")
    return path


def index_payload(index: pl.DataFrame, scorers: list[str], chunk: int) -> dict[str, Any]:
    """The browser's table as compact rows (hookpoint as a number)."""
    hps = sorted(set(index["hookpoint"].to_list()))
    pos = {h: i for i, h in enumerate(hps)}
    cols = ["latent", "explainer", "explanation", "status", "frequency", *scorers]
    rows = [
        [pos[r[0]], *(_jsonable(v) for v in r[1:])]
        for r in index.select("hookpoint", *cols).iter_rows()
    ]
    return {
        "hookpoints": hps,
        "columns": ["hookpoint", *cols],
        "scorers": scorers,
        "chunk": chunk,
        "rows": rows,
    }


def detail_payload(detail: dict[str, Any]) -> dict[str, Any]:
    """A latent's details with each window rendered to HTML (the tokens are escaped here)."""

    def win(w: dict[str, Any]) -> dict[str, Any]:
        return {
            "kind": w["kind"],
            "split": w["split"],
            "quantile": w["quantile"],
            "max": round(w["max_activation"], 4),
            "source_latent": w["source_latent"],
            "html": window_html(w["strings"], w["norm"], w["activations"]),
        }

    out = {k: v for k, v in detail.items() if k not in ("activating", "contrast")}
    out["activating"] = [win(w) for w in detail["activating"]]
    out["contrast"] = [win(w) for w in detail["contrast"]]
    for e in out["explanations"]:
        e["selection_score"] = _jsonable(e.get("selection_score"))
    return out


def render_page(title: str, summary: str, plots: list[tuple[str, str]], plot_dir: str) -> str:
    """``index.html`` from ``assets/index.html``."""
    figures = "\n".join(
        f'<figure><img src="{esc(plot_dir)}/{esc(name)}" alt="{esc(caption)}">'
        f"<figcaption>{esc(caption)}</figcaption></figure>"
        for name, caption in plots
    )
    template = Template((ASSETS / "index.html").read_text(encoding="utf-8"))
    return template.substitute(title=esc(title), summary=summary, plots=figures)
