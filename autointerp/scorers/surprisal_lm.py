"""The local causal LM of the surprisal scorer: per-token loss of text windows after a prefix.

A prefix is run ONCE (its KV cache and the logits at its last token are kept); every batch of
windows then runs on a copy of that cache repeated to the batch size, so a latent's
explanation prefix costs one forward pass whatever its number of windows. Windows are
right-padded: with causal attention no real token sees a pad, so no mask is needed.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

NEUTRAL_CACHE_MAX = 200_000  # windows whose neutral-prefix loss is remembered


@dataclass
class PrefixState:
    ids: list[int]
    cache: Any  # transformers Cache (DynamicCache) of the prefix
    last_logits: torch.Tensor  # [vocab]: predicts the window's first token


@dataclass
class WindowLoss:
    loss: float  # mean negative log-likelihood (nats per token); NaN when lost
    n_tokens: int
    error: str | None = None


class PrefixLM:
    """One loaded model and tokenizer; thread-safe (one forward at a time)."""

    def __init__(self, model: Any, tokenizer: Any, batch_size: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.max_len = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        self.specials = [t for t in tokenizer.all_special_tokens if t]
        self.lock = threading.RLock()
        self._neutral: dict[tuple[str, str], WindowLoss] = {}

    def clean(self, text: str) -> str:
        """The window's text without special-token strings (e.g. ``<|bos|>``)."""
        for s in self.specials:
            text = text.replace(s, "")
        return text

    @torch.inference_mode()
    def prefix(self, text: str) -> PrefixState:
        ids = self.tokenizer(text)["input_ids"]  # with the tokenizer's BOS, if it adds one
        out = self.model(torch.tensor([ids], device=self.device), use_cache=True)
        return PrefixState(ids, out.past_key_values, out.logits[0, -1].float())

    @torch.inference_mode()
    def _batch(self, state: PrefixState, windows: list[list[int]]) -> list[float]:
        n = max(len(w) for w in windows)
        padded = np.zeros((len(windows), n), dtype=np.int64)
        for i, w in enumerate(windows):
            padded[i, : len(w)] = w
        ids = torch.from_numpy(padded).to(self.device)
        cache = copy.deepcopy(state.cache)
        cache.batch_repeat_interleave(len(windows))
        logits = self.model(ids, past_key_values=cache, use_cache=True).logits.float()
        first = state.last_logits.expand(len(windows), 1, -1)
        logp = torch.log_softmax(torch.cat([first, logits[:, :-1]], dim=1), dim=-1)
        nll = -logp.gather(-1, ids[..., None])[..., 0]
        keep = (
            torch.arange(n, device=self.device)[None]
            < torch.tensor([len(w) for w in windows], device=self.device)[:, None]
        )
        return ((nll * keep).sum(1) / keep.sum(1)).tolist()

    def losses(self, state: PrefixState, texts: list[str]) -> list[WindowLoss]:
        """Mean per-token loss of each window after the prefix (in batches of ``batch_size``)."""
        out: list[WindowLoss] = []
        todo: list[tuple[int, list[int]]] = []
        encoded = self.tokenizer([self.clean(t) for t in texts], add_special_tokens=False)
        for i, ids in enumerate(encoded["input_ids"] if texts else []):
            out.append(WindowLoss(float("nan"), len(ids)))
            if not ids:
                out[i].error = "the window re-tokenizes to no tokens"
            elif self.max_len and len(state.ids) + len(ids) > self.max_len:
                out[i].error = f"prefix + window exceed the model's {self.max_len} positions"
            else:
                todo.append((i, ids))
        todo.sort(key=lambda t: len(t[1]))  # similar lengths together: less padding
        with self.lock:
            for b in range(0, len(todo), self.batch_size):
                chunk = todo[b : b + self.batch_size]
                for (i, _), loss in zip(
                    chunk, self._batch(state, [w for _, w in chunk]), strict=True
                ):
                    out[i].loss = float(loss)
        return out

    def neutral_losses(self, prefix: str, texts: list[str]) -> list[WindowLoss]:
        """As ``losses`` after the neutral prefix, remembered per (prefix, window text): every
        explanation of a latent shares them."""
        missing = [t for t in dict.fromkeys(texts) if (prefix, t) not in self._neutral]
        if missing:
            with self.lock:
                state = self._neutral_state(prefix)
            if len(self._neutral) + len(missing) > NEUTRAL_CACHE_MAX:
                self._neutral.clear()
            for t, loss in zip(missing, self.losses(state, missing), strict=True):
                self._neutral[(prefix, t)] = loss
        return [self._neutral[(prefix, t)] for t in texts]

    def explained_losses(self, prefix: str, texts: list[str]) -> list[WindowLoss]:
        """As ``losses`` after ``prefix``, run once for all the windows."""
        with self.lock:
            return self.losses(self.prefix(prefix), texts)

    @lru_cache(maxsize=4)  # noqa: B019 (one PrefixLM per model for the process's life)
    def _neutral_state(self, prefix: str) -> PrefixState:
        return self.prefix(prefix)


_LOAD_LOCK = threading.Lock()


@lru_cache(maxsize=2)
def _load(model: str, device: str, dtype: str, batch_size: int) -> PrefixLM:
    from autointerp.config import SubjectConfig
    from autointerp.subject.model import load_subject

    lm, tokenizer = load_subject(SubjectConfig(model=model, device=device, dtype=dtype))
    return PrefixLM(lm, tokenizer, batch_size)


def get_lm(model: str, device: str, dtype: str, batch_size: int) -> PrefixLM:
    """The process's PrefixLM for these settings (loaded once)."""
    with _LOAD_LOCK:
        return _load(model, device, dtype, batch_size)


def as_array(losses: list[WindowLoss]) -> np.ndarray:
    return np.array([w.loss for w in losses], dtype=np.float64)
