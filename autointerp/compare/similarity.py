"""Similarity of two explanation texts: sentence embeddings (the shared embedding module) or,
when sentence-transformers / the default model is not installed, TF-IDF cosine."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import scipy.sparse as sp

from autointerp.embedding import (
    DEFAULT_MODEL,
    EmbeddingError,
    ExplanationStore,
    check_available,
    get_embedder,
)

log = logging.getLogger(__name__)
TFIDF = "tfidf"
_WORD = re.compile(r"[a-z0-9_]+")


def load_explanations(run_dir: Path, hookpoint: str, explainer: str | None = None) -> pl.DataFrame:
    """latent -> (explanation_id, explanation) of the selected ``ok`` rows of one hookpoint
    (one per latent: the first explainer in name order when several wrote one)."""
    path = Path(run_dir) / "explanations.parquet"
    empty = pl.DataFrame(
        schema={"latent": pl.Int64, "explanation_id": pl.String, "explanation": pl.String}
    )
    if not path.is_file():
        log.warning("%s has no explanations.parquet: explanation similarity is skipped", run_dir)
        return empty
    df = pl.read_parquet(path).filter(
        (pl.col("hookpoint") == hookpoint.replace(":", "@"))
        & pl.col("selected")
        & (pl.col("status") == "ok")
        & pl.col("explanation").is_not_null()
    )
    if explainer is not None:
        df = df.filter(pl.col("explainer") == explainer)
    return (
        df.sort(["latent", "explainer"])
        .unique("latent", keep="first", maintain_order=True)
        .select(pl.col("latent").cast(pl.Int64), "explanation_id", "explanation")
    )


def tfidf_vectors(texts: Sequence[str]) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows (lower-cased word tokens, smooth idf, sublinear tf)."""
    vocab: dict[str, int] = {}
    rows, cols, vals = [], [], []
    for i, text in enumerate(texts):
        words, counts = np.unique(_WORD.findall(text.lower()), return_counts=True)
        for w, c in zip(words.tolist(), counts.tolist(), strict=True):
            rows.append(i)
            cols.append(vocab.setdefault(w, len(vocab)))
            vals.append(1.0 + np.log(c))
    m = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), max(len(vocab), 1)))
    df = np.bincount(m.indices, minlength=m.shape[1])
    idf = np.log((1 + len(texts)) / (1 + df)) + 1.0
    m = m @ sp.diags(idf)
    norms = np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ m)


class TextSimilarity:
    """Cosine similarity of explanation pairs; ``backend`` says what was used."""

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "auto") -> None:
        self.model = model
        self.device = device
        self.backend = TFIDF if model == TFIDF else model
        if self.backend != TFIDF:
            try:
                check_available(model)
            except EmbeddingError as err:
                if model != DEFAULT_MODEL:
                    raise
                log.warning("%s; explanation similarity falls back to TF-IDF cosine", err)
                self.backend = TFIDF

    def vectors(
        self, runs: Sequence[Path], tables: Sequence[pl.DataFrame]
    ) -> list[np.ndarray | sp.csr_matrix]:
        """One matrix of row vectors per table (rows in table order)."""
        if self.backend == TFIDF:
            texts = [t for tab in tables for t in tab["explanation"].to_list()]
            allv = tfidf_vectors(texts)
            out, at = [], 0
            for tab in tables:
                out.append(allv[at : at + tab.height])
                at += tab.height
            return out
        embedder = get_embedder(self.model, self.device)
        out = []
        for run, tab in zip(runs, tables, strict=True):
            if tab.is_empty():
                out.append(np.zeros((0, 1), dtype=np.float32))
                continue
            store = ExplanationStore(run, embedder)  # cached per run, shared with the scorers
            ids, texts = tab["explanation_id"].to_list(), tab["explanation"].to_list()
            store.ensure(ids, texts)
            out.append(store.vectors(ids))
        return out


def pair_similarity(va, vb, ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
    """Cosine of row ``ia[k]`` of ``va`` and row ``ib[k]`` of ``vb`` (normalised rows)."""
    if not len(ia):
        return np.zeros(0, dtype=np.float32)
    if sp.issparse(va):
        sims = np.asarray(va[ia].multiply(vb[ib]).sum(axis=1)).ravel()
    else:
        sims = np.einsum("ij,ij->i", va[ia], vb[ib])
    return sims.astype(np.float32)
