"""Semantic search over explanations, across runs (e.g. every layer of a model at once).

The explanations of each run (the selected rows of ``explanations.parquet`` and of
``imported_explanations.parquet``, status ok) are embedded once with a sentence-embedding
model (default the bundled all-MiniLM-L6-v2) and stored in
``RUN_DIR/embeddings/<model-slug>/explanations.parquet`` (shared with the embedding scorer;
autointerp/embedding.py). A query is embedded the same way and compared by brute-force cosine
(normalised vectors: a dot product), in chunks, so 10^6 explanations need no vector database.
The same vectors give each latent its nearest latents by explanation. Columns in
docs/search.md.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl

from autointerp.embedding import DEFAULT_MODEL, Embedder, ExplanationStore, get_embedder
from autointerp.scorers.registry import HEADLINE

log = logging.getLogger(__name__)
SOURCES = ("explanations.parquet", "imported_explanations.parquet")
ROW_COLUMNS = ["run", "hookpoint", "latent", "explainer", "explanation_id", "explanation"]
CHUNK = 65_536  # rows of the explanation matrix per matmul


def run_explanations(run_dir: Path) -> pl.DataFrame:
    """The run's selected, successful explanations (one row per latent, explainer and text)."""
    frames = []
    for name in SOURCES:
        path = Path(run_dir) / name
        if path.is_file():
            df = pl.read_parquet(path).filter(pl.col("selected") & (pl.col("status") == "ok"))
            frames.append(df.select(ROW_COLUMNS[1:]))
    if not frames:
        raise FileNotFoundError(
            f"no explanations in {run_dir}: run `autointerp explain {run_dir}` (or `autointerp "
            "rescore`) first"
        )
    out = pl.concat(frames, how="vertical_relaxed").filter(pl.col("explanation").is_not_null())
    out = out.unique(["hookpoint", "latent", "explanation_id"], keep="first", maintain_order=True)
    return out.with_columns(run=pl.lit(str(run_dir))).select(ROW_COLUMNS)


def explanation_index(
    runs: Sequence[str | Path], embedder: Embedder
) -> tuple[pl.DataFrame, np.ndarray]:
    """Every explanation of ``runs`` (rows) and its normalised embedding (matrix rows, in
    order); explanations not yet embedded are embedded and stored in their run."""
    frames, mats = [], []
    for run in runs:
        df = run_explanations(Path(run))
        store = ExplanationStore(Path(run), embedder)
        ids, texts = df["explanation_id"].to_list(), df["explanation"].to_list()
        n = store.ensure(ids, texts)
        if n:
            log.info("embedded %d explanations of %s", n, run)
        frames.append(df)
        mats.append(store.vectors(ids) if ids else np.zeros((0, embedder.dim), np.float32))
    return pl.concat(frames, how="vertical"), np.concatenate(mats, axis=0)


def _top_k(scores_of, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest of ``n`` scores, computed a chunk at a time."""
    best_i, best_v = np.zeros(0, np.int64), np.zeros(0, np.float32)
    for a in range(0, n, CHUNK):
        v = scores_of(a, min(n, a + CHUNK))
        keep = np.argpartition(-v, min(k, v.size) - 1)[:k] if v.size > k else np.arange(v.size)
        best_i = np.concatenate([best_i, keep + a])
        best_v = np.concatenate([best_v, v[keep]])
        if best_v.size > k:
            top = np.argpartition(-best_v, k - 1)[:k]
            best_i, best_v = best_i[top], best_v[top]
    order = np.lexsort((best_i, -best_v))
    return best_i[order], best_v[order]


def headline_scores(run_dir: Path) -> pl.DataFrame | None:
    """``<scorer>_<metric>`` of the first headline metric of every scorer with a table, per
    (hookpoint, latent, explanation_id)."""
    key = ["hookpoint", "latent", "explanation_id"]
    out = None
    for path in sorted((Path(run_dir) / "scores").glob("*.parquet")):
        scorer = path.name.removesuffix(".parquet")
        if "." in scorer or scorer not in HEADLINE:
            continue
        metric = HEADLINE[scorer][0]
        df = pl.read_parquet(path, columns=[*key, "status", metric]).filter(
            pl.col("status") == "ok"
        )
        df = df.group_by(key, maintain_order=True).agg(pl.col(metric).first())
        df = df.rename({metric: f"{scorer}_{metric}"})
        out = df if out is None else out.join(df, on=key, how="full", coalesce=True)
    return out


def _with_scores(rows: pl.DataFrame) -> pl.DataFrame:
    if rows.is_empty():  # no explanation to rank (e.g. every one failed)
        return rows
    parts = []
    for run in rows["run"].unique(maintain_order=True).to_list():
        sub = rows.filter(pl.col("run") == run)
        scores = headline_scores(Path(run))
        if scores is not None:
            sub = sub.join(scores, on=["hookpoint", "latent", "explanation_id"], how="left")
        parts.append(sub)
    return pl.concat(parts, how="diagonal_relaxed").sort("rank")


def search(
    runs: str | Path | Sequence[str | Path],
    query: str,
    k: int = 20,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 256,
) -> pl.DataFrame:
    """The ``k`` explanations nearest to ``query`` over all ``runs``, best first: rank,
    similarity, run, hookpoint, latent, explainer, explanation_id, explanation, and the
    latent's headline scores (``<scorer>_<metric>``) where scored."""
    if not query.strip():
        raise ValueError("empty search query: give a few words describing the latents you want")
    runs = [runs] if isinstance(runs, str | Path) else list(runs)
    embedder = get_embedder(model, device, batch_size)
    rows, mat = explanation_index(runs, embedder)
    q = embedder.embed([query], query=True)[0]
    idx, sims = _top_k(lambda a, b: mat[a:b] @ q, mat.shape[0], k)
    hits = rows[idx.tolist()].with_columns(
        rank=pl.Series(np.arange(1, idx.size + 1), dtype=pl.Int32),
        similarity=pl.Series(sims.astype(np.float64)),
    )
    return _with_scores(hits.select("rank", "similarity", *ROW_COLUMNS))


def nearest_latents(
    runs: str | Path | Sequence[str | Path],
    k: int = 5,
    model: str = DEFAULT_MODEL,
    device: str = "auto",
    batch_size: int = 256,
) -> pl.DataFrame:
    """Per explanation of ``runs``, the ``k`` nearest explanations of OTHER latents (cosine,
    chunked matmul): the row's ROW_COLUMNS, then rank, similarity and the neighbour's
    ``neighbour_run``, ``neighbour_hookpoint``, ``neighbour_latent``,
    ``neighbour_explanation``."""
    runs = [runs] if isinstance(runs, str | Path) else list(runs)
    rows, mat = explanation_index(runs, get_embedder(model, device, batch_size))
    n = mat.shape[0]
    ident = rows["run"] + "\x00" + rows["hookpoint"] + "\x00" + rows["latent"].cast(pl.String)
    owner = ident.cast(pl.Categorical).to_physical().to_numpy()
    block = max(1, (1 << 26) // max(n, 1))  # ~256 MB of similarities at a time
    src, dst, rank, sim = [], [], [], []
    kk = min(k, n)
    for a in range(0, n, block):
        s = mat[a : a + block] @ mat.T
        s[owner[a : a + block, None] == owner[None, :]] = -np.inf  # not the latent itself
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < n else np.argsort(-s, axis=1)
        vals = np.take_along_axis(s, top, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        top, vals = np.take_along_axis(top, order, 1), np.take_along_axis(vals, order, 1)
        for i in range(top.shape[0]):
            ok = np.isfinite(vals[i])
            src += [a + i] * int(ok.sum())
            dst += top[i][ok].tolist()
            rank += list(range(1, int(ok.sum()) + 1))
            sim += vals[i][ok].astype(np.float64).tolist()
    left = rows[src]
    right = rows[dst].select(
        pl.col("run").alias("neighbour_run"),
        pl.col("hookpoint").alias("neighbour_hookpoint"),
        pl.col("latent").alias("neighbour_latent"),
        pl.col("explanation").alias("neighbour_explanation"),
    )
    extra = pl.DataFrame(
        {"rank": rank, "similarity": sim}, schema={"rank": pl.Int32, "similarity": pl.Float64}
    )
    return pl.concat([left, extra, right], how="horizontal")
