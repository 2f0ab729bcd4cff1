"""One interface for every sparse coder (SAE or transcoder) format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Capture = Literal["output", "input"]


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
