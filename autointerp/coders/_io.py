"""Small readers shared by the format loaders; every failure is a one-line CoderLoadError."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from autointerp.coders.base import CoderLoadError, CoderShapeError


def read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CoderLoadError(f"missing {path.name} in {path.parent}: the coder folder needs it")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CoderLoadError(f"cannot read {path}: {e}; re-download or rewrite the file") from e
    if not isinstance(data, dict):
        raise CoderLoadError(f"{path} must hold a JSON object")
    return data


def safetensors_keys(path: Path) -> set[str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    except Exception as e:  # noqa: BLE001 - any reader error means an unreadable file
        raise CoderLoadError(f"cannot read {path}: {e}; re-download the file") from e


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CoderLoadError(f"missing {path.name} in {path.parent}: the coder folder needs it")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001
        raise CoderLoadError(f"cannot read {path}: {e}; re-download the file") from e


def require(weights: dict[str, torch.Tensor], names: list[str], where: Path) -> None:
    missing = [n for n in names if n not in weights]
    if missing:
        raise CoderLoadError(
            f"{where} lacks tensors {missing} (has {sorted(weights)}): "
            "the file is not a complete coder of this format"
        )


def check_shape(name: str, t: torch.Tensor, shape: tuple[int, ...], where: Path) -> None:
    if tuple(t.shape) != shape:
        raise CoderShapeError(
            f"{name} in {where} has shape {tuple(t.shape)}, expected {shape}: "
            "the config and the weights disagree"
        )


def as_float(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to(torch.float32).contiguous()
