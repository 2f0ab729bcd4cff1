"""Hookpoints: module paths whose output (or input, for transcoders) is captured.

``model.layers.1`` captures the module's output; ``model.layers.1.mlp:input`` its first
positional input. On disk the ``:`` becomes ``@`` (``model.layers.1.mlp@input``).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from autointerp.coders.base import Capture

log = logging.getLogger(__name__)

_CAPTURES: tuple[Capture, ...] = ("output", "input")


class UnknownHookpointError(ValueError):
    """A hookpoint names no module of the model (the message lists the closest names)."""


@dataclass(frozen=True)
class Hookpoint:
    spec: str  # canonical: "path" for outputs, "path:input" for inputs
    module_path: str
    capture: Capture

    @property
    def dirname(self) -> str:
        """The folder name of this hookpoint (``:`` replaced by ``@``)."""
        return self.spec.replace(":", "@")


def parse_hookpoint(spec: str, default_capture: Capture = "output") -> Hookpoint:
    """Parse ``path``, ``path:input`` or ``path:output`` (``@`` accepted for ``:``)."""
    text = spec.strip().replace("@", ":")
    path, sep, capture = text.partition(":")
    path = path.strip()
    if not sep:
        capture = default_capture
    if not path or any(c.isspace() for c in path) or capture not in _CAPTURES:
        raise ValueError(
            f"bad hookpoint '{spec}': write a module path, optionally with :input or :output "
            "(e.g. model.layers.1 or model.layers.1.mlp:input)"
        )
    canonical = path if capture == "output" else f"{path}:input"
    return Hookpoint(spec=canonical, module_path=path, capture=capture)  # type: ignore[arg-type]


def _as_hookpoint(hp: Hookpoint | str) -> Hookpoint:
    return hp if isinstance(hp, Hookpoint) else parse_hookpoint(hp)


def resolve_module(model: nn.Module, hp: Hookpoint | str) -> nn.Module:
    """The module ``hp`` names; ``UnknownHookpointError`` listing the closest names if none."""
    hp = _as_hookpoint(hp)
    modules = dict(model.named_modules())
    if hp.module_path in modules:
        return modules[hp.module_path]
    names = [n for n in modules if n]
    close = difflib.get_close_matches(hp.module_path, names, n=5, cutoff=0.0)
    raise UnknownHookpointError(
        f"unknown hookpoint '{hp.spec}' for {type(model).__name__}: closest valid module "
        f"names are {', '.join(close)}; pick one (all names: model.named_modules())"
    )


def _first_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "to_tuple"):  # a ModelOutput
        return _first_tensor(value.to_tuple())
    return None


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


class _StopForward(Exception):
    """Raised inside the last hook to abort the forward pass once everything is captured."""


class ActivationCapture:
    """Capture hookpoint activations ``[batch, seq, d]`` during a forward pass.

    ``with ActivationCapture(model, ["model.layers.1"]) as cap: acts = cap.run(ids)``.
    With ``stop_early`` the forward pass is aborted as soon as every hookpoint was captured,
    so the layers after the deepest hookpoint never run.
    """

    def __init__(
        self, model: nn.Module, hookpoints: Sequence[Hookpoint | str], stop_early: bool = True
    ) -> None:
        self.model = model
        self.hookpoints = list(dict.fromkeys(_as_hookpoint(h) for h in hookpoints))
        if not self.hookpoints:
            raise ValueError("ActivationCapture needs at least one hookpoint")
        self.modules = [resolve_module(model, h) for h in self.hookpoints]  # fails early
        self.stop_early = stop_early
        self._handles: list[RemovableHandle] = []
        self._captured: dict[str, torch.Tensor] = {}

    def _store(self, hp: Hookpoint, value: torch.Tensor | None) -> None:
        if value is None:
            raise RuntimeError(f"hookpoint {hp.spec} produced no tensor to capture")
        if hp.spec not in self._captured:
            self._captured[hp.spec] = value.detach()
        if self.stop_early and len(self._captured) == len(self.hookpoints):
            raise _StopForward

    def _make_hook(self, hp: Hookpoint) -> Any:
        if hp.capture == "output":

            def out_hook(_module: nn.Module, _args: Any, output: Any) -> None:
                self._store(hp, _first_tensor(output))

            return out_hook

        def in_hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            value = _first_tensor(args) if args else None
            if value is None:
                value = kwargs.get("hidden_states")
                if value is None:
                    value = next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
            self._store(hp, value)

        return in_hook

    def __enter__(self) -> ActivationCapture:
        for hp, module in zip(self.hookpoints, self.modules, strict=True):
            hook = self._make_hook(hp)
            if hp.capture == "output":
                handle = module.register_forward_hook(hook)
            else:
                handle = module.register_forward_pre_hook(hook, with_kwargs=True)
            self._handles.append(handle)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def run(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One forward pass; per hookpoint spec the captured tensor ``[batch, seq, d]``."""
        if not self._handles:
            raise RuntimeError("use ActivationCapture as a context manager: with ... as cap")
        self._captured = {}
        try:
            with torch.inference_mode():
                self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except _StopForward:
            pass
        missing = [h.spec for h in self.hookpoints if h.spec not in self._captured]
        if missing:
            raise RuntimeError(f"hookpoints {missing} were not reached by the forward pass")
        captured, self._captured = self._captured, {}
        return captured


def hookpoint_width(model: nn.Module, hp: Hookpoint | str) -> int:
    """Width of the tensor captured at ``hp``, from a 2-token probe forward pass."""
    hp = _as_hookpoint(hp)
    config = getattr(model, "config", None)
    token = getattr(config, "bos_token_id", None)
    token = token if isinstance(token, int) else 0
    ids = torch.full((1, 2), token, dtype=torch.long, device=_model_device(model))
    with ActivationCapture(model, [hp], stop_early=True) as cap:
        return int(cap.run(ids)[hp.spec].shape[-1])
