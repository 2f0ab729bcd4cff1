"""Per-latent steering strength: find ``alpha`` whose steering moves the next-token
distribution by a target KL divergence, averaged over the latent's held-out prompts.

Batched over latents: every round evaluates the current ``alpha`` of every unfinished latent
on all its prompts in a few forward passes (batch row = (latent, prompt), each row with its
own direction and alpha; subject/steering.py). Per latent: a first guess from the hookpoint's
activation norm; while unbracketed a step in log space assuming KL ~ alpha^2 (at most x8);
once bracketed, interpolation in log-log space kept inside the middle 80% of the bracket
(safeguarded bisection in log space). Stops within ``tol`` (relative) or after ``max_steps``
rounds (then the alpha whose KL came closest is kept, ``converged`` false).

Prompts (``held_out_prompts``): the cached token sequences of the latent's activating windows
of one split, cut just before the latent's first activation in the sequence (as in the
delphi paper), at most ``max_len`` tokens ending there. The intervention pre-pass calibrates
alpha and computes the steering view (which the ``output`` explainer shows) on ``train``
prompts, and generates the completions it scores from ``test`` prompts: splits are drawn by
sequence, so no scored prompt was seen by the explainer.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch import nn

from autointerp.cache.reader import ActivationCache
from autointerp.runner.examples import examples_path
from autointerp.subject.hookpoints import parse_hookpoint, resolve_module
from autointerp.subject.steering import Steering, left_pad

log = logging.getLogger(__name__)


@dataclass
class Calibration:
    alpha: float = math.nan
    kl: float = math.nan
    n_forward: int = 0  # steered evaluations of this latent (rounds)
    converged: bool = False
    steer_top: list[int] = field(default_factory=list)  # steering view: token ids
    steer_delta: list[float] = field(default_factory=list)  # their mean probability rise


def held_out_prompts(
    run_dir: Path,
    hookpoint: str,
    latents: list[int],
    n_prompts: int,
    max_len: int,
    min_len: int,
    split: str = "test",
) -> dict[int, list[list[int]]]:
    """Up to ``n_prompts`` prompts per latent from the sequences of its activating windows of
    ``split`` (see above)."""
    ex = (
        pl.scan_parquet(examples_path(run_dir, hookpoint))
        .filter(pl.col("latent").is_in(latents) & (pl.col("split") == split))
        .filter(pl.col("kind") == "activating")
        .select("latent", "seq_id")
        .unique()
        .sort("latent", "seq_id")
        .collect()
    )
    cache = ActivationCache(run_dir, hookpoint)
    tokens = cache.tokens()
    lo, hi = min(latents), max(latents) + 1
    first = (
        cache.read_latents(lo, hi)
        .filter(pl.col("latent").is_in(latents))
        .group_by("latent", "seq_id")
        .agg(pl.col("pos").min().alias("first"))
    )
    joined = ex.join(first, on=["latent", "seq_id"], how="inner").sort("latent", "seq_id")
    out: dict[int, list[list[int]]] = {int(lat): [] for lat in latents}
    for lat, seq, f in joined.select("latent", "seq_id", "first").iter_rows():
        if f < min_len or len(out[lat]) >= n_prompts:
            continue
        out[lat].append(tokens[seq, max(0, f - max_len) : f].tolist())
    return out


class Calibrator:
    """Evaluates KL(clean || steered) at the last position for many latents at once."""

    def __init__(
        self,
        model: nn.Module,
        hookpoint: str,
        pad_id: int,
        *,
        mode: str = "add",
        positions: str = "last",
        coder: Any = None,
        batch_rows: int = 256,
    ) -> None:
        self.model, self.hookpoint, self.pad_id = model, hookpoint, pad_id
        self.mode, self.positions, self.coder = mode, positions, coder
        self.batch_rows = batch_rows
        self.device = next(model.parameters()).device
        self.forward_calls = 0

    @torch.inference_mode()
    def _forward(
        self,
        prompts: list[list[int]],
        dirs: torch.Tensor | None,
        alphas: torch.Tensor | None = None,
        lat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Log-probs ``[B, vocab]`` at the last position, steered row by row (clean when
        ``dirs`` is None)."""
        ids, mask, pos = left_pad(prompts, self.pad_id, self.device)
        self.forward_calls += 1
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": False}
        if dirs is None:
            out = self.model(**kwargs)
        else:
            assert alphas is not None
            with Steering(
                self.model,
                self.hookpoint,
                dirs,
                alphas,
                mode=self.mode,  # type: ignore[arg-type]
                positions=self.positions,  # type: ignore[arg-type]
                coder=self.coder,
                latents=lat,
            ):
                out = self.model(**kwargs)
        return torch.log_softmax(out.logits[:, -1].float(), dim=-1)

    @torch.inference_mode()
    def _clean(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean log-probs ``[B, vocab]`` and the hookpoint's activation norm at the last
        position ``[B]`` (for the first guess of alpha)."""
        norms: list[torch.Tensor] = []

        def grab(_m: Any, args: Any, out: Any) -> None:
            t = out if isinstance(out, torch.Tensor) else out[0]
            if self.hookpoint.endswith(("@input", ":input")):
                t = args[0]
            norms.append(t[:, -1].float().norm(dim=-1))

        module = resolve_module(self.model, parse_hookpoint(self.hookpoint))
        handle = module.register_forward_hook(grab)
        try:
            logp = self._forward(prompts, None)
        finally:
            handle.remove()
        return logp, norms[0]

    def _rows(self, latents: list[int], prompts: dict[int, list[list[int]]]) -> Any:
        rows = [(i, p) for i, lat in enumerate(latents) for p in prompts[lat]]
        return np.array([i for i, _ in rows], dtype=np.int64), [p for _, p in rows]

    def kl_rounds(
        self,
        owner: np.ndarray,
        plist: list[list[int]],
        clean: torch.Tensor,
        dirs: torch.Tensor,
        alphas: np.ndarray,
        lat_ids: torch.Tensor,
        views: int = 0,
    ) -> tuple[np.ndarray, torch.Tensor | None]:
        """Mean KL per latent (``len(alphas)``) over its rows; with ``views`` > 0 also the
        per-latent mean probability change ``[n_latents, vocab]`` (steering view)."""
        n = len(alphas)
        kl_sum = torch.zeros(n, device=self.device, dtype=torch.float64)
        dp = torch.zeros(n, clean.shape[1], device=self.device) if views else None
        own = torch.from_numpy(owner).to(self.device)
        for s in range(0, len(plist), self.batch_rows):
            o = own[s : s + self.batch_rows]
            a = torch.from_numpy(alphas).to(self.device, torch.float32)[o]
            logq = self._forward(plist[s : s + self.batch_rows], dirs[o], a, lat_ids[o])
            logp = clean[s : s + self.batch_rows]
            kl = (logp.exp() * (logp - logq)).sum(-1).double()
            kl_sum.index_add_(0, o, kl)
            if dp is not None:
                dp.index_add_(0, o, logq.exp() - logp.exp())
        counts = torch.bincount(own, minlength=n).clamp(min=1)
        if dp is not None:
            dp = dp / counts[:, None]
        return (kl_sum / counts).cpu().numpy(), dp

    def calibrate(
        self,
        latents: list[int],
        directions: torch.Tensor,  # [n, d] decoder rows of ``latents``
        prompts: dict[int, list[list[int]]],
        target: float,
        tol: float,
        max_steps: int,
        view_k: int = 10,
    ) -> dict[int, Calibration]:
        """``alpha`` per latent (latents without prompts get NaN and no forward pass)."""
        out = {lat: Calibration() for lat in latents}
        have = [lat for lat in latents if prompts.get(lat)]
        if not have:
            return out
        idx = {lat: i for i, lat in enumerate(latents)}
        dirs = directions[[idx[lat] for lat in have]].to(self.device, torch.float32)
        owner, plist = self._rows(have, prompts)
        lat_ids = torch.tensor(have, device=self.device)
        clean_parts, norm_parts = [], []
        for s in range(0, len(plist), self.batch_rows):
            logp, norm = self._clean(plist[s : s + self.batch_rows])
            clean_parts.append(logp)
            norm_parts.append(norm)
        clean = torch.cat(clean_parts)
        hnorm = np.bincount(owner, torch.cat(norm_parts).cpu().numpy()) / np.bincount(owner)
        dnorm = dirs.norm(dim=-1).clamp(min=1e-12).cpu().numpy()
        n = len(have)
        log_a = np.log(0.5 * hnorm / dnorm)
        lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
        klo, khi = np.zeros(n), np.zeros(n)
        best_a, best_kl = np.exp(log_a), np.full(n, np.nan)
        steps = np.zeros(n, dtype=np.int64)
        active = np.ones(n, dtype=bool)
        lt = math.log(target)
        for _ in range(max_steps):
            act = np.flatnonzero(active)
            if not len(act):
                break
            rows = np.isin(owner, act)
            remap = np.full(n, -1)
            remap[act] = np.arange(len(act))
            sub_owner = remap[owner[rows]]
            kl, _ = self.kl_rounds(
                sub_owner,
                [p for p, r in zip(plist, rows, strict=True) if r],
                clean[torch.from_numpy(rows).to(self.device)],
                dirs[act],
                np.exp(log_a[act]),
                lat_ids[act],
            )
            steps[act] += 1
            for j, i in enumerate(act):
                k = float(kl[j])
                if not np.isfinite(best_kl[i]) or abs(k - target) < abs(best_kl[i] - target):
                    best_a[i], best_kl[i] = math.exp(log_a[i]), k
                if abs(k - target) <= tol * target:
                    active[i] = False
                    continue
                if k < target:
                    lo[i], klo[i] = log_a[i], k
                else:
                    hi[i], khi[i] = log_a[i], k
                if np.isfinite(lo[i]) and np.isfinite(hi[i]):
                    t = 0.5
                    if klo[i] > 0 and khi[i] > klo[i]:
                        t = (lt - math.log(klo[i])) / (math.log(khi[i]) - math.log(klo[i]))
                    log_a[i] = lo[i] + min(0.9, max(0.1, t)) * (hi[i] - lo[i])
                else:
                    step = 0.5 * (lt - math.log(k)) if k > 0 else math.log(8)
                    log_a[i] += min(math.log(8), max(-math.log(8), step))
        _, dp = self.kl_rounds(owner, plist, clean, dirs, best_a, lat_ids, views=view_k)
        assert dp is not None
        top = dp.topk(view_k, dim=-1)
        for i, lat in enumerate(have):
            out[lat] = Calibration(
                alpha=float(best_a[i]),
                kl=float(best_kl[i]),
                n_forward=int(steps[i]),
                converged=bool(abs(best_kl[i] - target) <= tol * target),
                steer_top=top.indices[i].tolist(),
                steer_delta=top.values[i].tolist(),
            )
        return out
