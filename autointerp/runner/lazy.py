"""A name -> class registry whose classes are imported on first use, so that a process
(a scoring worker, `autointerp score --scorers detection`) imports only the peers it runs
(some pull in torch, sentence-transformers or a subject model's code)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any


class LazyRegistry(Mapping[str, Any]):
    def __init__(self, entries: dict[str, str]) -> None:
        self._paths = dict(entries)  # name -> "package.module:Class"
        self._loaded: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._loaded:
            module, _, attr = self._paths[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attr)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)

    def __contains__(self, name: object) -> bool:
        return name in self._paths
