"""``rescore``: score explanations from any source on this run's test windows.

Sources: an ``explanations.parquet`` of any run; a CSV / JSON / JSONL / Parquet table with a
latent column and an explanation column (e.g. a Neuronpedia export: ``index`` and
``description``); or a delphi ``explanations/`` folder (one ``<hookpoint>_latent<N>.txt`` per
latent holding a JSON string). Imported rows are kept in ``imported_explanations.parquet``;
scoring skips what is already scored for the same text and scorer config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from autointerp.config import RunConfig
from autointerp.explainers.base import SCHEMA, explanation_id
from autointerp.explainers.run import check_latents
from autointerp.runner.examples import require_examples
from autointerp.runner.table import PartTable
from autointerp.scorers.run import score

log = logging.getLogger(__name__)
LATENT_NAMES = ("latent", "index", "latent_index", "feature", "feature_index", "neuron")
TEXT_NAMES = ("explanation", "description", "label", "text")
_DELPHI = re.compile(r"^(?P<hookpoint>.+)_latent(?P<latent>\d+)\.txt$")


def _read_table(path: Path) -> pl.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        df = pl.read_parquet(path)
        if "selected" in df.columns:
            df = df.filter(pl.col("selected"))
        return df
    if suffix == ".csv":
        return pl.read_csv(path, infer_schema_length=None)
    if suffix == ".jsonl":
        return pl.read_ndjson(path)
    if suffix == ".json":
        data = json.loads(path.read_text())
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise ValueError(f"{path}: expected a JSON list of rows (or one list inside)")
            data = lists[0]
        return pl.DataFrame(data, infer_schema_length=None)
    raise ValueError(
        f"cannot read explanations from {path.name}: use .parquet, .csv, .json, .jsonl or a "
        "delphi explanations/ folder"
    )


def _read_delphi(folder: Path) -> pl.DataFrame:
    rows = []
    for f in sorted(folder.glob("*.txt")):
        m = _DELPHI.match(f.name)
        if not m:
            continue
        raw = f.read_text().strip()
        try:
            text = json.loads(raw)
        except json.JSONDecodeError:
            text = raw
        rows.append(
            {"hookpoint": m["hookpoint"], "latent": int(m["latent"]), "explanation": str(text)}
        )
    if not rows:
        raise ValueError(f"{folder} holds no delphi files named <hookpoint>_latent<N>.txt")
    return pl.DataFrame(rows)


def _pick(df: pl.DataFrame, given: str | None, names: Sequence[str], what: str) -> str:
    if given is not None:
        if given not in df.columns:
            raise ValueError(f"no column {given!r} in the explanations (have {df.columns})")
        return given
    found = next((c for c in names if c in df.columns), None)
    if found is None:
        raise ValueError(f"no {what} column among {df.columns}: name it with --{what}-column")
    return found


def clean_text(text: object, max_chars: int) -> tuple[str, bool]:
    """An imported explanation as a judge may see it: control and format characters (C0/C1
    controls, zero-width and bidirectional marks) removed, whitespace runs made one space, at
    most ``max_chars`` characters. Returns (text, whether it was cut)."""
    raw = "" if text is None else str(text)
    kept = "".join(
        " " if ch.isspace() else ch
        for ch in raw
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf")
    )
    clean = " ".join(kept.split())
    if len(clean) <= max_chars:
        return clean, False
    return clean[:max_chars].rstrip(), True


def _match_hookpoint(name: str, have: list[str]) -> str | None:
    name = name.replace(":", "@")
    if name in have:
        return name
    hits = [h for h in have if h.endswith("." + name)]
    return hits[0] if len(hits) == 1 else None


def load_external(
    source: Path,
    run_hookpoints: list[str],
    latent_column: str | None = None,
    explanation_column: str | None = None,
    hookpoint_column: str | None = None,
    hookpoint: str | None = None,
    max_chars: int = 1000,
) -> pl.DataFrame:
    """Explanation rows (the explanations.parquet schema) from any supported source, each
    cleaned and cut to ``max_chars`` (:func:`clean_text`)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"explanations source {source} does not exist")
    df = _read_delphi(source) if source.is_dir() else _read_table(source)
    lat = _pick(df, latent_column, LATENT_NAMES, "latent")
    txt = _pick(df, explanation_column, TEXT_NAMES, "explanation")
    hp_col = hookpoint_column or ("hookpoint" if "hookpoint" in df.columns else None)
    if hookpoint is not None:
        hps = [hookpoint] * df.height
    elif hp_col is not None:
        hps = [str(h) for h in df[hp_col].to_list()]
    elif len(run_hookpoints) == 1:
        hps = run_hookpoints * df.height
    else:
        raise ValueError(
            f"the run has several hookpoints ({run_hookpoints}): pass --hookpoint or "
            "--hookpoint-column"
        )
    mapped = {h: _match_hookpoint(h, run_hookpoints) for h in set(hps)}
    unknown = sorted(h for h, m in mapped.items() if m is None)
    if unknown:
        raise ValueError(
            f"hookpoint(s) {unknown} of the explanations are not in this run "
            f"({run_hookpoints}): pass --hookpoint"
        )
    name = f"import:{source.name}"
    names = (
        [f"{name}:{e}" if e else name for e in df["explainer"].to_list()]
        if "explainer" in df.columns
        else [name] * df.height
    )
    rows, cut = [], 0
    for h, latent, text, who in zip(hps, df[lat].to_list(), df[txt].to_list(), names, strict=True):
        clean, was_cut = clean_text(text, max_chars)
        cut += was_cut
        rows.append(
            {
                "hookpoint": mapped[h],
                "latent": int(latent),
                "explanation_id": explanation_id(clean or None, f"{h}:{latent}:empty"),
                "explainer": who,
                "candidate": 0,
                "selected": True,
                "status": "ok" if clean else "failed",
                "explanation": clean or None,
                "error": None if clean else "empty explanation in the source",
                "config_hash": "imported",
                "source": str(source),
            }
        )
    if cut:
        log.warning(
            "%d imported explanations were longer than %d characters and were cut "
            "(score.import_max_chars)",
            cut,
            max_chars,
        )
    out = pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows[0]}) if rows else None
    if out is None:
        raise ValueError(f"{source} holds no explanation rows")
    out = out.unique(["hookpoint", "latent", "explanation_id"], keep="first", maintain_order=True)
    return out.with_columns(explanation_set=_import_sets(out))


def _import_sets(df: pl.DataFrame) -> pl.Series:
    """An imported explanation set's identity (``explanation_set``): ``i`` + a hash of its
    explainer name and its (hookpoint, latent, explanation_id) rows, so two sources (or two
    versions of one file) are two sets."""
    ids = {}
    for (who,), g in df.group_by("explainer"):
        rows = sorted(g.select("hookpoint", "latent", "explanation_id").iter_rows())
        blob = json.dumps([who, rows]).encode()
        ids[who] = "i" + hashlib.sha256(blob).hexdigest()[:11]
    return df["explainer"].replace_strict(ids, return_dtype=pl.String)


def rescore(
    run_dir: str | Path,
    config: RunConfig,
    source: str | Path,
    scorers: Sequence[str] | None = None,
    latent_column: str | None = None,
    explanation_column: str | None = None,
    hookpoint_column: str | None = None,
    hookpoint: str | None = None,
    force: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Import ``source``, check every latent exists in the run, and score what is new."""
    run_dir = Path(run_dir)
    have = require_examples(run_dir, None)
    expl = load_external(
        Path(source),
        have,
        latent_column,
        explanation_column,
        hookpoint_column,
        hookpoint,
        max_chars=config.score.import_max_chars,
    )
    for hp in expl["hookpoint"].unique().to_list():
        check_latents(run_dir, hp, expl.filter(pl.col("hookpoint") == hp)["latent"].to_list())
    table = PartTable(
        run_dir / "imported_explanations.parquet",
        ["hookpoint", "latent", "explanation_id", "explainer"],
    )
    keys = ["hookpoint", "latent", "explanation_id", "explainer"]
    existing = table.read()
    new = expl if existing.is_empty() else expl.join(existing.select(keys), on=keys, how="anti")
    table.add(new)
    table.close()
    log.info("rescoring %d explanations from %s", expl.height, source)
    return score(
        run_dir,
        config,
        scorers=scorers,
        explanations=expl,
        force=force,
        progress=progress,
        stage="rescore",
    )
