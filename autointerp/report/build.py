"""``build_report``: the run's static HTML report (``report/``), its plots and data files."""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

import polars as pl

from autointerp.output_views import read_views
from autointerp.report import data, details, html
from autointerp.scorers.audit import run_audit
from autointerp.scorers.audit_summary import audit_summary
from autointerp.scorers.summary import summarize
from autointerp.text import vocab_for

log = logging.getLogger(__name__)

CHUNK = 64  # latents per detail file


def build_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    n_activating: int = 10,
    n_contrast: int = 2,
    chunk: int = CHUNK,
    seed: int = 0,
    audit: tuple[Sequence[str], int] | None = None,
) -> Path:
    """Write ``RUN_DIR/report/`` (or ``out_dir``): ``index.html``, ``report.css``,
    ``report.js``, ``plots/*.png``, ``data/index.js`` and ``latents/<hookpoint>/<first>.js``
    (docs/report.md); returns the path of ``index.html``. ``audit``: (scorers, seed) of a
    shortcut audit still to write (``scorers.audit.run_audit``; the pipeline leaves the
    score stage's to the report): written in another process while the detail files are,
    and read when the summary is."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory {run_dir}: pass the folder of a run")
    hps = data.hookpoints(run_dir)
    if not hps:
        raise FileNotFoundError(
            f"{run_dir} has no cache/<hookpoint>/meta.json or examples/*.parquet: "
            "run `autointerp cache` and `autointerp sample` first"
        )
    if n_activating < 0 or n_contrast < 0 or chunk < 1:
        raise ValueError("n_activating and n_contrast must be >= 0 and chunk >= 1")
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    for stale in ("latents", "data", "plots"):  # a rebuild never keeps old chunks
        shutil.rmtree(out / stale, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)

    summary = data.run_summary(run_dir)
    means = summarize(run_dir, seed=seed)
    scores = data.score_tables(run_dir)
    scorers = list(scores)
    index = data.latent_index(run_dir, scores)

    # the plots (matplotlib: its import, a first run's font cache, the drawing) in another
    # process while this one writes the detail files, on a machine with a spare core
    # (and the shortcut audit left to the report, in one more)
    plotter = None
    if (os.cpu_count() or 1) > 1:
        from autointerp.runner.procs import die_with_parent

        plotter = ProcessPoolExecutor(
            1 if audit is None else 2,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )
    try:
        drawn: Future | None = None
        audited: Future | None = None
        if plotter is not None:
            if audit is not None:  # the longer task first
                audited = plotter.submit(run_audit, run_dir, list(audit[0]), audit[1])
            drawn = plotter.submit(write_plots, out, scores, means, index, scorers)
        else:
            if audit is not None:
                run_audit(run_dir, list(audit[0]), seed=audit[1])
            figures = write_plots(out, scores, means, index, scorers)
        n_files = _write_details(run_dir, out, hps, index, scores, chunk, n_activating, n_contrast)
        if drawn is not None:
            figures = drawn.result()
        if audited is not None:
            audited.result()
    finally:
        if plotter is not None:
            plotter.shutdown(cancel_futures=True)

    payload = html.index_payload(index, scorers, chunk)
    html.write_js(out / "data" / "index.js", "AUTOINTERP_INDEX", payload, assign=True)

    for asset in ("report.js", "report.css"):
        shutil.copyfile(html.ASSETS / asset, out / asset)
    title = f"autointerp report: {run_dir.resolve().name}"
    audit = audit_summary(run_dir, seed=seed)
    page = html.render_page(title, html.summary_html(summary, means, audit), figures, "plots")
    (out / "index.html").write_text(page, encoding="utf-8")
    log.info("report: %d explanations, %d latent files -> %s", index.height, n_files, out)
    return out / "index.html"


def run_config_model(run_dir: Path) -> str:
    """The subject model of ``run.yaml`` (or the default), for hookpoints without a cache."""
    from autointerp.config import load_config

    run_yaml = run_dir / "run.yaml"
    return load_config(run_yaml if run_yaml.is_file() else None, {}).subject.model


def _chunks(run_dir: Path, hp: str, index: pl.DataFrame, chunk: int):
    """(first latent, latents) per chunk of ``chunk`` latent ids: every latent with examples
    or an explanation row."""
    ids = set(index.filter(pl.col("hookpoint") == hp)["latent"].to_list())
    path = run_dir / "examples" / f"{hp}.parquet"
    if path.is_file():
        ids |= set(pl.scan_parquet(path).select("latent").unique().collect()["latent"].to_list())
    groups: dict[int, list[int]] = {}
    for latent in sorted(ids):
        groups.setdefault(latent // chunk * chunk, []).append(latent)
    yield from groups.items()


def write_plots(
    out: Path,
    scores: dict[str, pl.DataFrame],
    means: pl.DataFrame,
    index: pl.DataFrame,
    scorers: list[str],
) -> list[tuple[str, str]]:
    """The PNG plots and ``agreement.csv`` under ``out/plots``; returns (file, caption) pairs."""
    from autointerp.report import plots

    figures: list[tuple[str, str]] = []
    for name, df in scores.items():
        plots.score_histograms(name, df, means, out / "plots" / f"scores_{name}.png")
        figures.append((f"scores_{name}.png", f"{name}: distribution of its headline metrics"))
    if scorers:
        plots.score_vs_frequency(index, scorers, out / "plots" / "score_vs_frequency.png")
        figures.append(("score_vs_frequency.png", "main metric vs log10 latent frequency"))
        rho, n = data.agreement(index, scorers)
        plots.agreement_matrix(rho, n, scorers, out / "plots" / "agreement.png")
        figures.append(("agreement.png", "Spearman agreement between scorers' main metrics"))
        pl.DataFrame(
            {"scorer": scorers, **{s: rho[:, j] for j, s in enumerate(scorers)}}
        ).write_csv(out / "plots" / "agreement.csv")
    return figures


def _write_details(
    run_dir: Path,
    out: Path,
    hps: list[str],
    index: pl.DataFrame,
    scores: dict[str, pl.DataFrame],
    chunk: int,
    n_activating: int,
    n_contrast: int,
) -> int:
    """The per-latent detail files (``latents/<hookpoint>/<first>.js``); returns how many."""
    expl = data.explanations(run_dir)
    n_files = 0
    for hp in hps:
        model = data.cache_meta(run_dir, hp).get("model")
        vocab = vocab_for(model) if model else vocab_for(run_config_model(run_dir))
        expl_hp = details.by_hookpoint(expl, hp)
        views = read_views(run_dir, hp)  # output-centric views, if the intervention stage ran
        scores_hp = {name: details.by_hookpoint(df, hp) for name, df in scores.items()}
        examples = details.ExampleRows(run_dir / "examples" / f"{hp}.parquet")
        for first, latents in _chunks(run_dir, hp, index, chunk):
            rows = details.latent_details(
                run_dir, hp, latents, vocab, expl_hp, scores_hp, n_activating, n_contrast, views,
                examples,
            )  # fmt: skip
            by_latent = {d["latent"]: html.detail_payload(d) for d in rows}
            html.write_js(
                out / "latents" / hp / f"{first}.js",
                "AUTOINTERP_CHUNK",
                {"hookpoint": hp, "first": first, "latents": by_latent},
            )
            n_files += 1
    return n_files
