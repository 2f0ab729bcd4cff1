"""Steer the subject model along latents' decoder directions, batched over latents.

``with Steering(model, hookpoint, directions, alphas) as s: model(...)``: batch row ``b`` gets
its own direction ``directions[b]`` and strength ``alphas[b]``, so one forward pass evaluates
many latents (or many strengths) at once. Two modes:

- ``add``: the hookpoint's output (input for transcoders) gets ``alpha * decoder_row``;
- ``clamp``: the latent is clamped to ``alpha`` through the coder with the coder's error term
  added back, i.e. ``x + (alpha - f_i(x)) * decoder_row`` (``f_i``: the coder's activation of
  latent ``i`` at that position; the reconstruction is linear in the latents).

``positions``: ``last`` steers only the last position of each forward call (the prompt's last
token, then every generated token when decoding with a KV cache); ``all`` steers every
position. Left-padded batches (see ``left_pad``) keep every row's last token at ``-1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from autointerp.subject.hookpoints import Hookpoint, parse_hookpoint, resolve_module

Mode = Literal["add", "clamp"]
Positions = Literal["last", "all"]


class Steering:
    """Context manager adding a per-row steering vector at one hookpoint."""

    def __init__(
        self,
        model: nn.Module,
        hookpoint: Hookpoint | str,
        directions: torch.Tensor,  # [B, d]
        alphas: torch.Tensor,  # [B]
        *,
        mode: Mode = "add",
        positions: Positions = "last",
        coder: Any = None,
        latents: torch.Tensor | None = None,  # [B] latent ids (clamp mode)
    ) -> None:
        self.hp = hookpoint if isinstance(hookpoint, Hookpoint) else parse_hookpoint(hookpoint)
        self.module = resolve_module(model, self.hp)
        if mode == "clamp" and (coder is None or latents is None):
            raise ValueError("clamp steering needs the coder and each row's latent id")
        self.directions = directions
        self.alphas = alphas
        self.mode = mode
        self.positions = positions
        self.coder = coder
        self.latents = latents
        self._handle: Any = None

    def _delta(self, h: torch.Tensor) -> torch.Tensor:
        """The vector added at each steered position: ``[B, d]`` or ``[B, T, d]``."""
        d = self.directions.to(h.dtype)
        if self.mode == "add":
            return self.alphas.to(h.dtype)[:, None] * d
        x = h[:, -1] if self.positions == "last" else h
        acts = self.coder.encode(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        lat = self.latents.to(h.device)
        if self.positions == "last":
            cur = acts.gather(-1, lat[:, None])[:, 0]
            return ((self.alphas - cur).to(h.dtype))[:, None] * d
        cur = acts.gather(-1, lat[:, None, None].expand(-1, x.shape[1], 1))[..., 0]
        return ((self.alphas[:, None] - cur).to(h.dtype))[..., None] * d[:, None]

    def _apply(self, h: torch.Tensor) -> torch.Tensor:
        if h.shape[0] != self.directions.shape[0]:
            raise RuntimeError(
                f"steering has {self.directions.shape[0]} rows but the batch has {h.shape[0]}: "
                "give one direction and alpha per batch row"
            )
        h = h.clone()
        delta = self._delta(h)
        if self.positions == "last":
            h[:, -1] = h[:, -1] + delta
        else:
            h = h + (delta if delta.dim() == 3 else delta[:, None])
        return h

    def __enter__(self) -> Steering:
        if self.hp.capture == "output":

            def out_hook(_m: nn.Module, _args: Any, output: Any) -> Any:
                if isinstance(output, torch.Tensor):
                    return self._apply(output)
                if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
                    return (self._apply(output[0]), *output[1:])
                raise RuntimeError(f"hookpoint {self.hp.spec} output has no tensor to steer")

            self._handle = self.module.register_forward_hook(out_hook)
        else:

            def in_hook(_m: nn.Module, args: tuple, kwargs: dict[str, Any]) -> Any:
                if args and isinstance(args[0], torch.Tensor):
                    return (self._apply(args[0]), *args[1:]), kwargs
                if isinstance(kwargs.get("hidden_states"), torch.Tensor):
                    return args, {**kwargs, "hidden_states": self._apply(kwargs["hidden_states"])}
                raise RuntimeError(f"hookpoint {self.hp.spec} input has no tensor to steer")

            self._handle = self.module.register_forward_pre_hook(in_hook, with_kwargs=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


def left_pad(
    prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask, position_ids)`` of left-padded prompts: every row's last
    token sits at position ``-1``."""
    n = max(len(p) for p in prompts)
    ids = np.full((len(prompts), n), pad_id, dtype=np.int64)
    mask = np.zeros((len(prompts), n), dtype=np.int64)
    for i, p in enumerate(prompts):
        if len(p):
            ids[i, n - len(p) :] = p
            mask[i, n - len(p) :] = 1
    ids_t = torch.from_numpy(ids).to(device)
    mask_t = torch.from_numpy(mask).to(device)
    pos = (mask_t.cumsum(-1) - 1).clamp(min=0)
    return ids_t, mask_t, pos


@torch.inference_mode()
def last_logits(model: nn.Module, prompts: Sequence[Sequence[int]], pad_id: int) -> torch.Tensor:
    """Next-token logits ``[B, vocab]`` (float32) after each prompt (one forward pass)."""
    device = next(model.parameters()).device
    ids, mask, pos = left_pad(prompts, pad_id, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    return out.logits[:, -1].float()


@torch.inference_mode()
def sample(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    pad_id: int,
    n_tokens: int,
    generator: torch.Generator,
    temperature: float = 1.0,
) -> list[list[int]]:
    """``n_tokens`` sampled continuations of each prompt (KV cache; seeded by ``generator``,
    which lives on the CPU: the draws do not depend on the device)."""
    device = next(model.parameters()).device
    ids, mask, pos = left_pad(prompts, pad_id, device)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True)
    past, logits = out.past_key_values, out.logits[:, -1].float()
    tokens: list[torch.Tensor] = []
    for step in range(n_tokens):
        probs = torch.softmax(logits / max(temperature, 1e-6), dim=-1).cpu()
        nxt = torch.multinomial(probs, 1, generator=generator).to(device)  # [B, 1]
        tokens.append(nxt)
        if step == n_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(nxt)], dim=1)
        pos = pos[:, -1:] + 1
        out = model(
            input_ids=nxt,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=past,
            use_cache=True,
        )
        past, logits = out.past_key_values, out.logits[:, -1].float()
    return torch.cat(tokens, dim=1).tolist() if tokens else [[] for _ in prompts]
