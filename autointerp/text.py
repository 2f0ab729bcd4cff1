"""Token ids -> display text, with highlighting, for prompts and reports.

Tokens are decoded ONE BY ONE into a table (``Vocab``): ``batch_decode`` of a 1-D tensor returns
a single joined string under transformers 5, which silently removed all highlighting in another
tool for months. A test checks that a highlighted window's text round-trips to its tokens.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

OPEN, CLOSE = "<<", ">>"
ESCAPED_LT, ESCAPED_GT = "\u2039", "\u203a"  # ‹ ›: a text's < / > that would touch a marker
_OPEN_SENTINEL, _CLOSE_SENTINEL = "\x00", "\x01"  # markers while escaping (NUL never shown)
_LT_TOUCHING = re.compile("(?<=[<\x00])<|<(?=[<\x00])")
_GT_TOUCHING = re.compile("(?<=[>\x01])>|>(?=[>\x01])")
NEWLINE = "↵"  # how one_line() shows a newline (previews, logs); prompts keep real newlines
# a marked run ends at the LAST ">>" of a run of ">" (the text itself may end in ">")
_SPAN = re.compile(r"<<(?!<)(.+?)>>(?!>)", re.DOTALL)


class Vocab:
    """The display string of every token id, decoded alone. Newlines stay real newlines:
    prompts show windows as blocks (a visible stand-in such as "↵" costs a third more tokens
    and breaks the tokenizer's merges of a newline with the indentation after it)."""

    def __init__(self, strings: Sequence[str], special: Sequence[int] = ()) -> None:
        self.strings: list[str] = [s.replace("\r", "") for s in strings]
        self._array = np.array(self.strings + [""], dtype=object)  # last: out-of-range ids
        # ids of special tokens (BOS, EOS, ...): what the shortcut audit counts as shown
        self.special_ids: np.ndarray = np.unique(np.asarray(list(special), dtype=np.int64))
        # lookup table over ids (last slot: out of range), cheaper than np.isin per window
        self._special = np.zeros(len(self.strings) + 1, dtype=bool)
        inside = self.special_ids[(self.special_ids >= 0) & (self.special_ids < len(self.strings))]
        self._special[inside] = True

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> Vocab:
        n = len(tokenizer)
        special = getattr(tokenizer, "all_special_ids", None) or []
        return cls([tokenizer.decode([i]) for i in range(n)], special)

    def n_special(self, ids: Sequence[int] | np.ndarray) -> int:
        """How many of ``ids`` are special tokens."""
        idx = np.asarray(ids, dtype=np.int64)
        n = len(self.strings)
        return int(self._special[np.where((idx >= 0) & (idx < n), idx, n)].sum())

    def special_counts(self, flat: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """:meth:`n_special` of each of many windows at once: ``flat``, their ids one after
        the other, ``lengths`` tokens each."""
        idx = np.asarray(flat, dtype=np.int64)
        n = len(self.strings)
        hit = self._special[np.where((idx >= 0) & (idx < n), idx, n)].astype(np.int64)
        row = np.repeat(np.arange(len(lengths)), lengths)
        return np.bincount(row, weights=hit, minlength=len(lengths)).astype(np.int64)

    def tokens(self, ids: Sequence[int] | np.ndarray) -> list[str]:
        idx = np.asarray(ids, dtype=np.int64)
        n = len(self.strings)
        idx = np.where((idx >= 0) & (idx < n), idx, n)
        return self._array[idx].tolist()

    def window_strings(self, windows: Any) -> list[list[str]]:
        """Token strings of many windows at once (a polars list column or a list of lists)."""
        import polars as pl

        col = windows if isinstance(windows, pl.Series) else pl.Series(list(windows))
        if col.is_empty():
            return []
        lengths = col.list.len().fill_null(0).to_numpy().astype(np.int64)
        # arrow's flatten drops null and empty lists (explode would give them a null element)
        flat = np.asarray(col.to_arrow().flatten().fill_null(-1), dtype=np.int64)
        n = len(self.strings)
        flat = np.where((flat >= 0) & (flat < n), flat, n)
        values = self._array[flat]
        ends = np.cumsum(lengths)
        return [
            values[e - k : e].tolist() for e, k in zip(ends.tolist(), lengths.tolist(), strict=True)
        ]

    def text(self, ids: Sequence[int] | np.ndarray) -> str:
        return "".join(self.tokens(ids))


@lru_cache(maxsize=8)
def _load_vocab(model: str) -> Vocab:
    folder = Path(model)
    if (folder / "tokenizer.json").is_file():
        # the fast tokenizer's own file: no transformers import (seconds saved per stage)
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        special = [i for i, t in tok.get_added_tokens_decoder().items() if t.special]
        return Vocab(
            [tok.decode([i], skip_special_tokens=False) for i in range(tok.get_vocab_size())],
            special,
        )
    from transformers import AutoTokenizer

    return Vocab.from_tokenizer(
        AutoTokenizer.from_pretrained(model, local_files_only=folder.is_dir())
    )


def vocab_for(model: str) -> Vocab:
    """The vocab of a subject model (hub id or folder), loaded once per process."""
    return _load_vocab(str(model))


def one_line(text: str) -> str:
    """``text`` on one line: newlines shown as ``↵`` (for previews and logs)."""
    return text.replace("\n", NEWLINE)


@lru_cache(maxsize=1 << 16)
def json_string(s: str) -> str:
    """``json.dumps(s, ensure_ascii=False)``, kept: tokens repeat across windows."""
    return json.dumps(s, ensure_ascii=False)


def json_strings(strings: Sequence[str]) -> str:
    """``json.dumps(list(strings), ensure_ascii=False)``, character for character, from the
    kept quotings of each string (the simulation prompt's windows)."""
    return "[" + ", ".join(map(json_string, strings)) + "]"


def excerpts(texts: Sequence[str]) -> str:
    """Windows as numbered blocks: ``1.`` on its own line, then the window's text (which may
    span lines); blocks separated by a blank line. (Half the tokens of ``Excerpt 1:``.)"""
    return "\n\n".join(f"{i}.\n{t}" for i, t in enumerate(texts, 1))


def highlight(tokens: Sequence[str], mask: Sequence[bool] | np.ndarray) -> str:
    """Join tokens, wrapping each run of consecutive highlighted tokens in ``<<...>>``.

    The markers stay unambiguous whatever the text holds (shift operators, doctest ``>>>``):
    a ``<`` of the text that touches another ``<`` (of the text or of a marker) is shown as
    ``‹``, a ``>`` touching another ``>`` as ``›``. So the shown text never contains ``<<`` or
    ``>>`` except as markers; every other character is shown as it is.
    """
    out: list[str] = []
    inside = False
    flags = mask.tolist() if isinstance(mask, np.ndarray) else mask
    raw = "".join(tokens)
    clean = _OPEN_SENTINEL not in raw and _CLOSE_SENTINEL not in raw  # nearly always
    for tok, on in zip(tokens, flags, strict=True):
        if on and not inside:
            out.append(_OPEN_SENTINEL)
            inside = True
        elif not on and inside:
            out.append(_CLOSE_SENTINEL)
            inside = False
        out.append(tok if clean else tok.replace(_OPEN_SENTINEL, "").replace(_CLOSE_SENTINEL, ""))
    if inside:
        out.append(_CLOSE_SENTINEL)
    text = _LT_TOUCHING.sub(ESCAPED_LT, "".join(out))
    text = _GT_TOUCHING.sub(ESCAPED_GT, text)
    return text.replace(_OPEN_SENTINEL, OPEN).replace(_CLOSE_SENTINEL, CLOSE)


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


def _ordinal(n: int) -> str:
    if n % 100 in (11, 12, 13):
        return f"{n}th"
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th') }"


def occurrences(text: str, part: str) -> list[int]:
    """Start offsets of every place ``part`` occurs in ``text`` (overlapping ones included)."""
    out: list[int] = []
    i = text.find(part) if part else -1
    while i >= 0:
        out.append(i)
        i = text.find(part, i + 1)
    return out


def marks(tokens: Sequence[str], mask: Sequence[bool] | np.ndarray) -> str:
    """The highlighted runs of one window, listed apart from its text (the fuzzing prompt shows
    the window plain, as detection does, then this): each run's text JSON-quoted, runs joined
    by ``, ``; a quoted text is the first place in the window where it occurs, and a run at
    a later place says which, ``"x" (2nd)``, counting every place the text starts, left to
    right. ``none`` when nothing is highlighted. :func:`marked_spans` reads it back."""
    text = "".join(tokens)
    out = []
    for a, b in token_spans(tokens, mask):
        run = text[a:b]
        k = occurrences(text, run).index(a)
        quoted = json.dumps(run, ensure_ascii=False)
        out.append(f"{quoted} ({_ordinal(k + 1)})" if k else quoted)
    return ", ".join(out) or "none"


_MARK = re.compile(r'("(?:[^"\\]|\\.)*")(?: \((\d+)(?:st|nd|rd|th)\))?')


def marked_spans(text: str, listed: str) -> list[tuple[int, int]] | None:
    """Inverse of :func:`marks`: the character spans of ``text`` that ``listed`` names (None
    when ``listed`` names text the window does not hold)."""
    if listed.strip() == "none":
        return []
    spans = []
    for m in _MARK.finditer(listed):
        run = json.loads(m.group(1))
        at = occurrences(text, run)
        k = int(m.group(2) or 1) - 1
        if not 0 <= k < len(at):
            return None
        spans.append((at[k], at[k] + len(run)))
    return spans


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
