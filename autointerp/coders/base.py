"""One interface for every sparse coder (SAE or transcoder) format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Capture = Literal["output", "input"]
Activation = Literal["relu", "topk", "jumprelu"]


class CoderLoadError(ValueError):
    """A coder cannot be found, downloaded or read (one-line message naming the fix)."""


class CoderShapeError(ValueError):
    """A coder's shapes do not fit the hookpoint (or its own files disagree)."""


@dataclass(frozen=True)
class SparseBatch:
    """Nonzero latent activations of a batch of activation vectors, in COO form.

    ``rows[i]`` indexes the input vector, ``latents[i]`` the latent, ``values[i]`` (> 0) the
    activation. Rows are sorted ascending; within a row, order is unspecified.
    """

    rows: torch.Tensor  # int64 [nnz]
    latents: torch.Tensor  # int64 [nnz]
    values: torch.Tensor  # float32 [nnz]


class SparseCoder(nn.Module):
    """A sparse coder: ``encode`` maps ``[N, d_in]`` activations to ``[N, n_latents]`` latents.

    Subclasses implement ``pre_acts`` and ``activation``; ``encode_sparse`` has a default that
    works for every activation and is overridden where a cheaper route exists (TopK).
    """

    format_name: str = "base"

    def __init__(self, d_in: int, n_latents: int, capture: Capture = "output") -> None:
        super().__init__()
        self.d_in = d_in
        self.n_latents = n_latents
        self.capture: Capture = capture  # "input" for transcoders
        self.source: str = ""  # where it was loaded from (path or hub id), for provenance

    @property
    def decoder_rows(self) -> torch.Tensor:
        """Decoder directions, ``[n_latents, d_out]``."""
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Dense latent activations ``[N, n_latents]`` (float32, >= 0)."""
        raise NotImplementedError

    def encode_sparse(self, x: torch.Tensor) -> SparseBatch:
        """Nonzero activations of ``x`` ``[N, d_in]`` in COO form."""
        dense = self.encode(x)
        rows, latents = torch.nonzero(dense > 0, as_tuple=True)
        return SparseBatch(rows=rows, latents=latents, values=dense[rows, latents].float())


class AffineSparseCoder(SparseCoder):
    """The coder every supported format reduces to.

    ``pre = (x - input_bias) @ W_enc + b_enc`` (optionally scaled by the decoder row norms),
    then ``relu``, ``topk`` (of the ReLU'd pre-activations, by ``k``) or ``jumprelu``
    (``relu(pre) * (pre > threshold)``; ``threshold`` is per latent or a scalar).
    Weights are buffers: a coder is never trained here.
    """

    def __init__(
        self,
        W_enc: torch.Tensor,  # [d_in, n_latents]
        b_enc: torch.Tensor | None,  # [n_latents]
        W_dec: torch.Tensor,  # [n_latents, d_out]
        b_dec: torch.Tensor | None,  # [d_out]
        *,
        activation: Activation,
        input_bias: torch.Tensor | None = None,  # [d_in], subtracted before encoding
        k: int | None = None,
        threshold: torch.Tensor | float | None = None,
        rescale_by_decoder_norm: bool = False,
        capture: Capture = "output",
    ) -> None:
        d_in, n_latents = W_enc.shape
        super().__init__(d_in=int(d_in), n_latents=int(n_latents), capture=capture)
        if W_dec.shape[0] != n_latents:
            raise CoderShapeError(
                f"decoder has {W_dec.shape[0]} rows but the encoder has {n_latents} latents: "
                "the coder's files are inconsistent"
            )
        if activation == "topk" and (k is None or not 0 < k <= n_latents):
            raise CoderShapeError(f"topk coder needs 0 < k <= {n_latents}, got k={k}")
        if activation == "jumprelu" and threshold is None:
            raise CoderShapeError("jumprelu coder needs a threshold")
        self.activation: Activation = activation
        self.k = k
        self.d_out = int(W_dec.shape[1])
        self.rescale_by_decoder_norm = rescale_by_decoder_norm
        self.register_buffer("W_enc", W_enc)
        self.register_buffer("b_enc", b_enc)
        self.register_buffer("W_dec", W_dec)
        self.register_buffer("b_dec", b_dec)
        self.register_buffer("input_bias", input_bias)
        if threshold is not None and not isinstance(threshold, torch.Tensor):
            threshold = torch.tensor(float(threshold))
        self.register_buffer("threshold", threshold)

    @property
    def decoder_rows(self) -> torch.Tensor:
        return self.W_dec

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the coder computes in (inputs are cast to it)."""
        return self.W_enc.dtype

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_in:
            raise CoderShapeError(
                f"input has width {x.shape[-1]} but the coder's d_in is {self.d_in}: "
                "feed activations of the hookpoint the coder was trained on"
            )
        return x.reshape(-1, self.d_in).to(self.W_enc.dtype)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-activations ``[N, n_latents]`` of ``x`` ``[N, d_in]``."""
        x = self._check_input(x)
        if self.input_bias is not None:
            x = x - self.input_bias
        pre = x @ self.W_enc
        if self.b_enc is not None:
            pre = pre + self.b_enc
        if self.rescale_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        pre = self.pre_acts(x)
        acts = torch.relu(pre)
        if self.activation == "topk":
            assert self.k is not None
            vals, idx = acts.topk(self.k, dim=-1, sorted=False)
            acts = torch.zeros_like(acts).scatter_(-1, idx, vals)
        elif self.activation == "jumprelu":
            acts = acts * (pre > self.threshold)
        return acts.float().reshape(*lead, self.n_latents)

    @torch.no_grad()
    def encode_sparse(self, x: torch.Tensor) -> SparseBatch:
        if self.activation != "topk":
            return super().encode_sparse(x.reshape(-1, x.shape[-1]))
        assert self.k is not None
        acts = torch.relu(self.pre_acts(x))
        vals, idx = acts.topk(self.k, dim=-1, sorted=False)
        n = acts.shape[0]
        rows = torch.arange(n, device=acts.device).repeat_interleave(self.k)
        vals, idx = vals.reshape(-1), idx.reshape(-1)
        keep = vals > 0
        return SparseBatch(rows=rows[keep], latents=idx[keep], values=vals[keep].float())

    def extra_repr(self) -> str:
        k = f", k={self.k}" if self.k is not None else ""
        return (
            f"format={self.format_name}, d_in={self.d_in}, n_latents={self.n_latents}, "
            f"d_out={self.d_out}, activation={self.activation}{k}, capture={self.capture}"
        )
