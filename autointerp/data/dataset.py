"""Text sources and fixed-length token windows.

``iter_texts`` yields documents from the bundled standard-library text, local ``.txt`` /
``.jsonl`` / ``.parquet`` files (or a folder of them, or a ``datasets.save_to_disk`` folder),
or a Hugging Face dataset by name. ``iter_windows`` turns documents into fixed windows of
``ctx_len`` token ids: documents are joined with EOS into one stream and, when the tokenizer has
a BOS token, every window is ``[BOS] + the next ctx_len - 1 tokens`` of that stream. Everything
is deterministic for a given config, so a resumed run regenerates exactly the same windows.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from autointerp.config import DatasetConfig
from autointerp.data.stdlib import stdlib_texts

log = logging.getLogger(__name__)

SUFFIXES = (".txt", ".jsonl", ".parquet")
_TOKENIZE_BATCH = 64


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one line naming the problem and the fix."""


def iter_texts(cfg: DatasetConfig) -> Iterator[str]:
    """Yield the documents of the configured source, in a fixed order (shuffled by seed)."""
    source = cfg.source
    if source == "stdlib":
        yield from _stdlib_texts(cfg)
        return
    path = Path(source).expanduser()
    if path.is_file():
        yield from _file_texts(path, cfg.text_column)
    elif path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            yield from _saved_dataset_texts(path, cfg)
            return
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
        if not files:
            raise DatasetError(
                f"folder {path} holds no {'/'.join(SUFFIXES)} files; point --dataset at a "
                "folder or file with text"
            )
        if cfg.shuffle_seed is not None:
            random.Random(cfg.shuffle_seed).shuffle(files)
        for f in files:
            yield from _file_texts(f, cfg.text_column)
    elif _looks_local(source):
        raise DatasetError(
            f"dataset file {source} does not exist; pass an existing .txt/.jsonl/.parquet file "
            "or folder, 'stdlib', or a Hugging Face dataset name"
        )
    else:
        yield from hub_texts(source, cfg)


def _looks_local(source: str) -> bool:
    return source.startswith((".", "/", "~")) or source.endswith(SUFFIXES) or "\\" in source


def _stdlib_texts(cfg: DatasetConfig) -> Iterator[str]:
    if cfg.split not in ("train", "validation", "all"):
        raise DatasetError(
            f"split {cfg.split!r} does not exist for the stdlib dataset; use train, validation "
            "or all"
        )
    yield from stdlib_texts(cfg.split, cfg.shuffle_seed)  # type: ignore[arg-type]


def _file_texts(path: Path, column: str) -> Iterator[str]:
    if path.suffix == ".txt":
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield text
    elif path.suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(
                        f"{path}:{lineno} is not valid JSON ({exc.msg}); fix or remove that line"
                    ) from None
                text = _column(row, column, path)
                if text:
                    yield text
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        if column not in names:
            raise DatasetError(
                f"{path} has no column {column!r} (columns: {', '.join(names)}); pass --text-column"
            )
        for batch in pf.iter_batches(columns=[column], batch_size=1024):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text
    else:
        raise DatasetError(
            f"{path} has an unsupported suffix {path.suffix!r}; use .txt, .jsonl or .parquet"
        )


def _column(row: Any, column: str, where: object) -> str:
    if not isinstance(row, dict) or column not in row:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        raise DatasetError(f"{where} has no column {column!r} (found: {keys}); pass --text-column")
    return row[column] or ""


def _saved_dataset_texts(path: Path, cfg: DatasetConfig) -> Iterator[str]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split not in ds:
            raise DatasetError(
                f"split {cfg.split!r} not in {path} (splits: {', '.join(ds)}); pass --split"
            )
        ds = ds[cfg.split]
    yield from _dataset_rows(ds, cfg, str(path))


def hub_texts(name: str, cfg: DatasetConfig) -> Iterator[str]:
    """Documents of a dataset loaded with ``datasets.load_dataset`` (hub id or local repo dir)."""
    import datasets

    try:
        ds = datasets.load_dataset(name, cfg.name, split=cfg.split, streaming=cfg.streaming)
    except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise DatasetError(
            f"dataset {name!r} could not be found ({_first_line(exc)}); check the name, or pass "
            "a local .txt/.jsonl/.parquet file or 'stdlib'"
        ) from None
    except ValueError as exc:
        raise DatasetError(
            f"dataset {name!r}: {_first_line(exc)}; check --split and the dataset config name"
        ) from None
    yield from _dataset_rows(ds, cfg, name)


def _dataset_rows(ds: Any, cfg: DatasetConfig, where: str) -> Iterator[str]:
    names = list(ds.column_names or []) if ds.column_names is not None else None
    if names is not None and cfg.text_column not in names:
        raise DatasetError(
            f"dataset {where} has no column {cfg.text_column!r} (columns: {', '.join(names)}); "
            "pass --text-column"
        )
    if cfg.shuffle_seed is not None:
        ds = ds.shuffle(seed=cfg.shuffle_seed)
    for row in ds:
        text = _column(row, cfg.text_column, f"dataset {where}")
        if text:
            yield text


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _encode_batch(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return [enc.ids for enc in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def _batched(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def iter_windows(
    texts: Iterable[str], tokenizer: Any, ctx_len: int, n_windows: int | None = None
) -> Iterator[np.ndarray]:
    """Yield int32 windows of ``ctx_len`` token ids (at most ``n_windows`` of them).

    Raises DatasetError when the texts hold fewer tokens than one window; logs a warning when
    they hold fewer than ``n_windows`` windows (the caller records the real count).
    """
    if ctx_len < 2:
        raise DatasetError(f"ctx_len must be at least 2, got {ctx_len}; pass --ctx-len 64")
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    body = ctx_len - 1 if bos is not None else ctx_len
    sep = [eos] if eos is not None else []
    buf = np.empty(0, dtype=np.int32)
    done = 0
    for batch in _batched(texts, _TOKENIZE_BATCH):
        pieces = [buf]
        for ids in _encode_batch(tokenizer, batch):
            if ids:
                pieces.append(np.asarray(list(ids) + sep, dtype=np.int32))
        buf = np.concatenate(pieces)
        n_full = len(buf) // body
        if n_full == 0:
            continue
        if n_windows is not None:
            n_full = min(n_full, n_windows - done)
        rows = buf[: n_full * body].reshape(n_full, body)
        if bos is not None:
            rows = np.concatenate([np.full((n_full, 1), bos, dtype=np.int32), rows], axis=1)
        buf = buf[n_full * body :].copy()
        yield from rows
        done += n_full
        if n_windows is not None and done >= n_windows:
            return
    if done == 0:
        raise DatasetError(
            f"the dataset holds {len(buf)} tokens, fewer than one window of ctx_len={ctx_len}; "
            "use a larger dataset or a smaller --ctx-len"
        )
    if n_windows is not None and done < n_windows:
        log.warning(
            "the dataset holds only %d windows of %d tokens (%d requested); caching what there is",
            done,
            ctx_len,
            n_windows,
        )


def n_windows_for(n_tokens: int, ctx_len: int) -> int:
    """Number of windows that ``n_tokens`` tokens make (at least one)."""
    return max(1, n_tokens // ctx_len)
