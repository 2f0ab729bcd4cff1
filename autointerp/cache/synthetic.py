"""A synthetic activation source: random sparse codes driven through the real cache pipeline.

``synthetic_prepared`` stands in for ``prepare`` (no model, no tokenizer, no dataset): its
windows are random token ids and its encoder returns, for every token, ``l0`` distinct random
latents out of ``n_latents`` with positive values, in the same form the model's encoder does.
The nonzeros come from a small bank of precomputed batches, already sorted by latent as the
encoder leaves them on a GPU (cache/encode.py ``gather_packed``), copied, never recomputed: the
source runs at memory speed and ``cache_activations`` measures the host pipeline alone, the
host ceiling of caching (scripts/bench_cache.py --synthetic). With ``host_sort`` every batch
is sorted on the CPU instead, as ``SparseEncoder`` does without a GPU.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from autointerp.cache.encode import Nonzeros, sort_batch
from autointerp.cache.layout import CacheLayout
from autointerp.cache.prepare import Job, Prepared, fingerprint
from autointerp.cache.state import inspect
from autointerp.config import RunConfig
from autointerp.data.dataset import n_windows_for

N_BANK = 4  # distinct precomputed batches, cycled


@dataclass
class SyntheticCoder:
    """What the cache stage reads of a coder: its width and provenance."""

    n_latents: int
    d_in: int = 0
    format_name: str = "synthetic"
    reads_tokens: bool = False


def bank_batch(
    rng: np.random.Generator, n_windows: int, width: int, off: int, l0: int, n_latents: int
) -> Nonzeros:
    """One batch: every counted token gets ``l0`` distinct latents, rows in (seq, pos) order."""
    n_tok = n_windows * width
    pattern = np.sort(rng.choice(n_latents, size=l0, replace=False)).astype(np.int64)
    shift = rng.integers(0, n_latents, size=n_tok, dtype=np.int64)
    latent = ((shift[:, None] + pattern[None, :]) % n_latents).astype(np.int32).reshape(-1)
    row = np.repeat(np.arange(n_tok, dtype=np.int64), l0)
    value = rng.exponential(1.0, size=n_tok * l0).astype(np.float32) + np.float32(1e-3)
    return Nonzeros(
        latent=latent,
        seq=(row // width).astype(np.int32),
        pos=(row % width + off).astype(np.int16),
        value=value,
    )


class SyntheticEncoder:
    """``encode(windows)`` returns copies of banked batches (one per hookpoint)."""

    def __init__(
        self,
        specs: list[str],
        batch_size: int,
        ctx_len: int,
        skip_first: bool,
        l0: int,
        n_latents: int,
        seed: int = 0,
        host_sort: bool = False,
    ) -> None:
        rng = np.random.default_rng(seed)
        off = 1 if skip_first else 0
        self.width, self.l0, self.n_latents = ctx_len - off, l0, n_latents
        self.specs = specs
        self.host_sort, self.batch_size = host_sort, batch_size
        self.bank = [
            bank_batch(rng, batch_size, ctx_len - off, off, l0, n_latents) for _ in range(N_BANK)
        ]
        self.sorted_bank = [sort_batch(b, n_latents) for b in self.bank]
        self._next = itertools.cycle(range(N_BANK))

    def __enter__(self) -> SyntheticEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def encode(self, windows: np.ndarray) -> dict[str, Nonzeros]:
        """Copies of a banked batch sorted by latent (a short last batch: its first windows)."""
        i = next(self._next)
        if self.host_sort:
            src = self.bank[i]
            n = len(windows) * self.width * self.l0  # rows in (seq, pos) order: a prefix
            prefix = Nonzeros(src.latent[:n], src.seq[:n], src.pos[:n], src.value[:n])
            return {spec: sort_batch(prefix, self.n_latents) for spec in self.specs}
        return {
            spec: _copy(self.sorted_bank[i], len(windows), self.batch_size) for spec in self.specs
        }


def _copy(nz: Nonzeros, n_windows: int, batch_size: int) -> Nonzeros:
    if n_windows == batch_size:
        cols = (nz.latent, nz.seq, nz.pos, nz.value, nz.counts)
        return Nonzeros(*(c.copy() for c in cols))  # type: ignore[union-attr]
    keep = nz.seq < n_windows
    latent = nz.latent[keep]
    counts = np.bincount(latent, minlength=len(nz.counts) if nz.counts is not None else 0)
    return Nonzeros(latent, nz.seq[keep], nz.pos[keep], nz.value[keep], counts)


def random_windows(n_windows: int, ctx_len: int, vocab: int, seed: int = 0) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    bank = rng.integers(0, vocab, size=(1024, ctx_len), dtype=np.int32)
    for i in range(n_windows):
        yield bank[i % len(bank)]


def synthetic_prepared(
    config: RunConfig, l0: int, n_latents: int, seed: int = 0, host_sort: bool = False
) -> Prepared:
    """A ``Prepared`` for ``config`` whose activations are random sparse codes.

    Every hookpoint of ``config.cache.hookpoints`` gets its own (identical) codes; position 0
    is skipped as with a BOS token when ``cache.exclude_bos`` is set. ``host_sort``: sort
    every batch on the CPU (as without a GPU) rather than copy sorted ones.
    """
    cc = config.cache
    if not 0 < l0 <= n_latents:
        raise ValueError(f"synthetic codes need 0 < l0 <= n_latents, got {l0} and {n_latents}")
    jobs = []
    for spec in cc.hookpoints:
        layout = CacheLayout.of(config.run_dir, spec)
        fp = fingerprint(config, spec)
        hp = SimpleNamespace(spec=spec, capture="output")
        coder: Any = SyntheticCoder(n_latents)
        jobs.append(Job(hp, coder, layout, fp, inspect(layout, fp)))  # type: ignore[arg-type]
    n_windows = n_windows_for(cc.n_tokens, cc.ctx_len)
    skip_first = cc.exclude_bos
    encoder = SyntheticEncoder(
        [j.hookpoint.spec for j in jobs],
        cc.batch_size,
        cc.ctx_len,
        skip_first,
        l0,
        n_latents,
        seed,
        host_sort,
    )
    return Prepared(
        model=None,  # type: ignore[arg-type]
        tokenizer=SimpleNamespace(bos_token_id=0 if skip_first else None),
        device=SimpleNamespace(type="cpu"),  # type: ignore[arg-type]
        jobs=jobs,
        windows=random_windows(n_windows, cc.ctx_len, 50_000, seed),
        n_windows=n_windows,
        skip_first=skip_first,
        encoder=encoder,
    )
