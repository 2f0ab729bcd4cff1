"""Everything checked before heavy work: model, hookpoints, coders, widths, dataset, files."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from autointerp.cache.budget import LEGACY_CHUNK_WINDOWS
from autointerp.cache.layout import FORMAT_VERSION, CacheLayout
from autointerp.cache.state import State, inspect
from autointerp.coders.base import SparseCoder
from autointerp.config import RunConfig
from autointerp.data.dataset import iter_texts, iter_windows, n_windows_for
from autointerp.subject.hookpoints import Hookpoint

log = logging.getLogger(__name__)

SECTIONS = ("subject", "coder", "dataset", "cache")  # what cached values depend on


@dataclass
class Job:
    """One hookpoint to cache: where, with which coder, and what is already there."""

    hookpoint: Hookpoint
    coder: SparseCoder
    layout: CacheLayout
    fingerprint: str
    state: State


@dataclass
class Prepared:
    model: torch.nn.Module
    tokenizer: Any
    device: torch.device
    jobs: list[Job]
    windows: Iterator[np.ndarray]  # the dataset's windows, first one peeked and put back
    n_windows: int  # requested
    skip_first: bool  # exclude_bos and the tokenizer has a BOS
    encoder: Any = None  # replaces the model's SparseEncoder (synthetic source) when set


# Settings that size buffers but never change the cached bytes: left out of the fingerprint,
# so a killed run can resume with another memory budget.
MEMORY_SETTINGS = ("max_memory_gb", "chunk_target_rows", "chunk_windows")


def fingerprint(config: RunConfig, spec: str, legacy: bool = False) -> str:
    """Hash of everything a hookpoint's cached values depend on (device and memory excluded).

    ``legacy``: the hash as computed before chunks were sized in bytes (it covered
    ``chunk_windows``, then 2048 by default), to recognise caches made or started then.
    """
    probe = config.model_copy(deep=True)
    probe.subject.device = "-"
    probe.cache.hookpoints = [spec]
    payload = {s: getattr(probe, s).model_dump(mode="json") for s in SECTIONS}
    for key in MEMORY_SETTINGS:
        payload["cache"].pop(key)
    if legacy:
        payload["cache"]["chunk_windows"] = config.cache.chunk_windows or LEGACY_CHUNK_WINDOWS
    blob = json.dumps(payload, sort_keys=True).encode()
    return f"v{FORMAT_VERSION}-" + hashlib.sha256(blob).hexdigest()[:16]


def load_hookpoint(
    model: torch.nn.Module,
    config: RunConfig,
    spec: str,
    device: torch.device,
    tokenizer: Any = None,
) -> tuple[Hookpoint, SparseCoder]:
    """Parse and resolve a hookpoint, load its coder, and check the widths agree (a coder that
    reads tokens, e.g. the planted coder, gets the tokenizer instead of a width check)."""
    from autointerp.coders.loader import check_width, load_coder
    from autointerp.subject.hookpoints import hookpoint_width, parse_hookpoint, resolve_module

    hp = parse_hookpoint(spec)
    resolve_module(model, hp)  # UnknownHookpointError with close names
    coder = load_coder(
        config.coder.path, hookpoint=hp.spec, revision=config.coder.revision, device=device
    )
    if coder.capture != hp.capture and ":" not in spec and "@" not in spec:
        hp = parse_hookpoint(spec, default_capture=coder.capture)  # transcoders read inputs
        resolve_module(model, hp)
    if getattr(coder, "reads_tokens", False):
        if tokenizer is None:
            raise ValueError(f"coder {config.coder.path} reads tokens: pass the tokenizer")
        coder.bind_tokenizer(tokenizer)  # type: ignore[attr-defined]
    else:
        check_width(coder, hookpoint_width(model, hp), hp.spec)
    return hp, coder


def prepare(config: RunConfig) -> Prepared:
    """Load and validate everything; raise a one-line error before any heavy work."""
    from autointerp.subject.model import load_subject, resolve_device

    device = resolve_device(config.subject.device)
    model, tokenizer = load_subject(config.subject, device)
    jobs: list[Job] = []
    seen: set[str] = set()
    for spec in config.cache.hookpoints:
        hp, coder = load_hookpoint(model, config, spec, device, tokenizer)
        if hp.spec in seen:
            continue
        seen.add(hp.spec)
        layout = CacheLayout.of(config.run_dir, hp.spec)
        fp = fingerprint(config, hp.spec)
        state = inspect(layout, fp, fingerprint(config, hp.spec, legacy=True))
        jobs.append(Job(hp, coder, layout, fp, state))
    cc = config.cache
    n_windows = n_windows_for(cc.n_tokens, cc.ctx_len)
    windows = iter_windows(iter_texts(config.dataset), tokenizer, cc.ctx_len, n_windows)
    first = next(windows)  # DatasetError here: empty or too short
    skip_first = bool(cc.exclude_bos and tokenizer.bos_token_id is not None)
    return Prepared(
        model=model,
        tokenizer=tokenizer,
        device=device,
        jobs=jobs,
        windows=itertools.chain([first], windows),
        n_windows=n_windows,
        skip_first=skip_first,
    )
