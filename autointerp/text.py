"""Token ids -> display text, with highlighting, for prompts and reports.

Tokens are decoded ONE BY ONE into a table (``Vocab``): ``batch_decode`` of a 1-D tensor returns
a single joined string under transformers 5, which silently removed all highlighting in another
tool for months. A test checks that a highlighted window's text round-trips to its tokens.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

OPEN, CLOSE = "<<", ">>"
NEWLINE = "↵"  # newlines inside a window are shown as this character, so a window is one line
# a marked run ends at the LAST ">>" of a run of ">" (the text itself may end in ">")
_SPAN = re.compile(r"<<(?!<)(.+?)>>(?!>)", re.DOTALL)


class Vocab:
    """The display string of every token id (decoded alone), with newlines made visible."""

    def __init__(self, strings: Sequence[str]) -> None:
        self.strings: list[str] = [s.replace("\r", "").replace("\n", NEWLINE) for s in strings]

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocab:
        n = len(tokenizer)
        return cls([tokenizer.decode([i]) for i in range(n)])

    def tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        s = self.strings
        return [s[int(i)] if 0 <= int(i) < len(s) else "" for i in ids]

    def text(self, ids: Sequence[int] | np.ndarray) -> str:
        return "".join(self.tokens(ids))


@lru_cache(maxsize=8)
def _load_vocab(model: str) -> Vocab:
    from transformers import AutoTokenizer

    local = Path(model).is_dir()
    tok = AutoTokenizer.from_pretrained(model, local_files_only=local)
    return Vocab.from_tokenizer(tok)


def vocab_for(model: str) -> Vocab:
    """The vocab of a subject model (hub id or folder), loaded once per process."""
    return _load_vocab(str(model))


def highlight(tokens: Sequence[str], mask: Sequence[bool] | np.ndarray) -> str:
    """Join tokens, wrapping each run of consecutive highlighted tokens in ``<<...>>``."""
    out: list[str] = []
    inside = False
    for tok, on in zip(tokens, mask, strict=True):
        if on and not inside:
            out.append(OPEN)
            inside = True
        elif not on and inside:
            out.append(CLOSE)
            inside = False
        out.append(tok)
    if inside:
        out.append(CLOSE)
    return "".join(out)


def highlighted_spans(text: str) -> tuple[str, list[tuple[int, int]]]:
    """Inverse of :func:`highlight`: the plain text and the character spans that were marked."""
    plain: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = 0
    length = 0
    for m in _SPAN.finditer(text):
        before = text[pos : m.start()]
        plain.append(before)
        length += len(before)
        spans.append((length, length + len(m.group(1))))
        plain.append(m.group(1))
        length += len(m.group(1))
        pos = m.end()
    plain.append(text[pos:])
    return "".join(plain), spans


def token_spans(tokens: Sequence[str], mask: Sequence[bool] | np.ndarray) -> list[tuple[int, int]]:
    """Character spans of the runs of highlighted tokens in the joined text."""
    spans: list[tuple[int, int]] = []
    pos = 0
    start: int | None = None
    for tok, on in zip(tokens, mask, strict=True):
        if on and start is None:
            start = pos
        elif not on and start is not None:
            spans.append((start, pos))
            start = None
        pos += len(tok)
    if start is not None:
        spans.append((start, pos))
    return spans
