"""One forward pass of the subject model, every hookpoint's coder applied: sparse nonzeros."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autointerp.coders.base import SparseBatch, SparseCoder


@dataclass
class Nonzeros:
    """Nonzero activations of a batch of windows, on the CPU, in the stored dtypes.

    ``seq`` counts windows from the start of the batch. What ``SparseEncoder.encode`` returns
    is sorted by latent, rows of one latent in (seq, pos) order.
    """

    latent: np.ndarray  # int32
    seq: np.ndarray  # int32
    pos: np.ndarray  # int16
    value: np.ndarray  # float32
    counts: np.ndarray | None = None  # rows of each latent, when known (sorted batches)

    def __len__(self) -> int:
        return len(self.latent)


def sort_batch(nz: Nonzeros, n_latents: int) -> Nonzeros:
    """``nz`` stably sorted by latent (rows of equal latent keep their order)."""
    key = nz.latent.astype(np.uint16) if n_latents <= 1 << 16 else nz.latent
    order = np.argsort(key, kind="stable")  # uint16: a radix sort
    counts = np.bincount(nz.latent, minlength=n_latents)
    if n_latents <= 4 * len(nz):  # the sorted latents from their counts: cheaper than a gather
        latent = np.repeat(np.arange(n_latents, dtype=np.int32), counts)
    else:
        latent = np.take(nz.latent, order)
    return Nonzeros(
        latent, np.take(nz.seq, order), np.take(nz.pos, order), np.take(nz.value, order), counts
    )


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
            if self.device.type == "cuda":
                out[spec] = gather_packed(sparse, width, off)
            else:
                rows = sparse.rows
                nz = Nonzeros(
                    latent=sparse.latents.to(torch.int32).cpu().numpy(),
                    seq=torch.div(rows, width, rounding_mode="floor").to(torch.int32).cpu().numpy(),
                    pos=(rows % width + off).to(torch.int16).cpu().numpy(),
                    value=sparse.values.to(torch.float32).cpu().numpy(),
                )
                out[spec] = sort_batch(nz, coder.n_latents)
        return out


def gather_packed(sparse: SparseBatch, width: int, off: int) -> Nonzeros:
    """Sort by latent, convert and pack the four columns where ``sparse`` lives, then one copy
    to the host (14 bytes a nonzero): on CUDA asynchronous, into pinned memory. The columns
    are views of that buffer.

    Rows of ``sparse`` are in row order, so the stable sort keeps (seq, pos) order within a
    latent, as ``sort_batch`` does. Used on CUDA (not measured on a GPU yet); runs anywhere.
    """
    device = sparse.latents.device
    cuda = device.type == "cuda"
    latent, order = torch.sort(sparse.latents.to(torch.int32), stable=True)
    rows = sparse.rows[order]
    n = int(latent.numel())
    packed = torch.empty(14 * n, dtype=torch.uint8, device=device)
    packed[: 4 * n].view(torch.int32).copy_(latent)
    packed[4 * n : 8 * n].view(torch.int32).copy_(torch.div(rows, width, rounding_mode="floor"))
    packed[8 * n : 12 * n].view(torch.float32).copy_(sparse.values[order])
    packed[12 * n :].view(torch.int16).copy_(rows % width + off)
    host = torch.empty(14 * n, dtype=torch.uint8, pin_memory=cuda)
    host.copy_(packed, non_blocking=cuda)
    if cuda:
        torch.cuda.current_stream(device).synchronize()
    buf = host.numpy()  # its base keeps the (pinned) tensor alive
    return Nonzeros(
        latent=buf[: 4 * n].view(np.int32),
        seq=buf[4 * n : 8 * n].view(np.int32),
        pos=buf[12 * n :].view(np.int16),
        value=buf[8 * n : 12 * n].view(np.float32),
    )


def _dtype_of(coder: SparseCoder) -> torch.dtype:
    for p in coder.parameters():
        return p.dtype
    return torch.float32
