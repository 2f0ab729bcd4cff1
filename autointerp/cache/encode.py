"""One forward pass of the subject model, every hookpoint's coder applied: sparse nonzeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autointerp.coders.base import SparseCoder


@dataclass
class Nonzeros:
    """Nonzero activations of a batch of windows, on the CPU, in the stored dtypes.

    ``seq`` counts windows from the start of the batch; rows are ordered by (seq, pos).
    """

    latent: np.ndarray  # int32
    seq: np.ndarray  # int32
    pos: np.ndarray  # int16
    value: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.latent)


class SparseEncoder:
    """Runs the model up to its deepest hookpoint and encodes each hookpoint's activations.

    Use as a context manager (it registers the capture hooks once); ``encode`` takes an int32
    ``[batch, ctx_len]`` array of token ids. Position 0 is skipped when ``skip_first`` is set
    (BOS excluded), so it never reaches the coder.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        hookpoints: list[Any],
        coders: dict[str, SparseCoder],
        device: torch.device,
        skip_first: bool,
    ) -> None:
        from autointerp.subject.hookpoints import ActivationCapture

        self.model = model
        self.hookpoints = hookpoints
        self.coders = coders
        self.device = device
        self.skip_first = skip_first
        self._capture = ActivationCapture(model, hookpoints, stop_early=True)
        self._dtypes = {spec: _dtype_of(c) for spec, c in coders.items()}

    def __enter__(self) -> SparseEncoder:
        self._capture.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._capture.__exit__(*exc)

    @torch.inference_mode()
    def encode(self, windows: np.ndarray) -> dict[str, Nonzeros]:
        ids = torch.from_numpy(np.ascontiguousarray(windows)).to(self.device, torch.long)
        acts = self._capture.run(ids)
        out: dict[str, Nonzeros] = {}
        off = 1 if self.skip_first else 0
        width = ids.shape[1] - off
        for spec, coder in self.coders.items():
            if getattr(coder, "reads_tokens", False):  # a planted coder: rules over token ids
                sparse = coder.encode_tokens(ids[:, off:])  # type: ignore[attr-defined]
            else:
                x = acts[spec][:, off:, :]
                flat = x.reshape(-1, x.shape[-1]).to(self._dtypes[spec])
                sparse = coder.encode_sparse(flat)
            rows = sparse.rows
            out[spec] = Nonzeros(
                latent=sparse.latents.to(torch.int32).cpu().numpy(),
                seq=torch.div(rows, width, rounding_mode="floor").to(torch.int32).cpu().numpy(),
                pos=(rows % width + off).to(torch.int16).cpu().numpy(),
                value=sparse.values.to(torch.float32).cpu().numpy(),
            )
        return out


def _dtype_of(coder: SparseCoder) -> torch.dtype:
    for p in coder.parameters():
        return p.dtype
    return torch.float32
