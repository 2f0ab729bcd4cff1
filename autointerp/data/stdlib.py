"""The bundled default text: the Python standard library's own source, found via sysconfig.

Every machine with Python has it, so the demo needs no download. Files are read in sorted order
and split deterministically into train and validation by a hash of their relative path.
"""

from __future__ import annotations

import hashlib
import os
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

Split = Literal["train", "validation", "all"]
_SKIP_PARTS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idlelib"}


def stdlib_root() -> Path:
    """Folder holding the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(split: Split = "train", validation_fraction: float = 0.05) -> list[Path]:
    """Sorted ``.py`` files of the standard library that belong to ``split``."""
    root = stdlib_root()
    files = []
    for path in sorted(_py_files(root)):
        rel = path.relative_to(root)
        if _SKIP_PARTS.intersection(rel.parts[:-1]):
            continue
        if split != "all":
            bucket = int(hashlib.sha1(str(rel).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            in_validation = bucket < validation_fraction
            if in_validation != (split == "validation"):
                continue
        files.append(path)
    return files


def _py_files(root: Path) -> Iterator[Path]:
    """The ``.py`` files under ``root``, not descending into skipped folders (the interpreter's
    own site-packages and tests hold ~20x the files kept: walking them took seconds)."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in _SKIP_PARTS]
        yield from (Path(folder, n) for n in names if n.endswith(".py"))


def stdlib_texts(split: Split = "train", shuffle_seed: int | None = None) -> Iterator[str]:
    """Yield the text of each standard-library source file of ``split``: sorted, or shuffled
    with ``shuffle_seed``."""
    files = stdlib_files(split)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(files)
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            yield text
