"""A planted coder: latents that are rules over tokens and context, with known true explanations.

It is loaded like any sparse coder (a folder holding ``planted.json``) and cached like one, but
reads token ids instead of hidden states (``reads_tokens``). Its point is ground truth: the
pipeline's scorers must rate a latent's true explanation above another latent's. The format and
each rule kind's exact semantics are in docs/planted.md.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autointerp.coders.base import CoderLoadError, SparseBatch, SparseCoder

log = logging.getLogger(__name__)

FORMAT = "autointerp-planted"
VERSION = 1
FILE_NAME = "planted.json"
KINDS = ("tokens", "regex", "string_literal", "after")
DECODER_WIDTH = 64
_P = 2_147_483_647  # 2**31 - 1: the Lehmer generator's modulus
_NO_PREV = 1_000_003  # "previous token id" of the first position


@dataclass(frozen=True)
class Rule:
    """One planted latent: where it fires (``kind`` + ``tokens``/``pattern``) and why."""

    name: str
    kind: str
    explanation: str
    tokens: tuple[str, ...] = ()
    pattern: str = ""
    value: float = 1.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens"] = list(self.tokens)
        if self.kind not in ("tokens", "after"):
            del d["tokens"]
        if self.kind != "regex":
            del d["pattern"]
        return d


def _tok(name: str, tokens: Sequence[str], explanation: str, kind: str = "tokens") -> Rule:
    return Rule(name=name, kind=kind, explanation=explanation, tokens=tuple(tokens))


# Meaningful on Python source (the bundled `stdlib` dataset); every token exists as a single
# token of the demo tokenizer (autointerp/assets/demo/lm), checked by tests/test_planted.py.
DEFAULT_RULES: tuple[Rule, ...] = (
    _tok("def", ["def"], 'the keyword "def"'),
    _tok("return", ["return"], 'the keyword "return"'),
    _tok("self", ["self"], 'the name "self"'),
    _tok("import", ["import", "from"], 'the keywords "import" and "from"'),
    _tok("constants", ["True", "False", "None"], 'the constants "True", "False" and "None"'),
    _tok("conditional", ["if", "elif", "else"], 'the keywords "if", "elif" and "else"'),
    _tok("loop", ["for", "while"], 'the loop keywords "for" and "while"'),
    _tok("exceptions", ["try", "except", "raise"], 'the keywords "try", "except" and "raise"'),
    _tok("equality", ["==", "!="], 'the comparison operators "==" and "!="'),
    _tok("boolean", ["and", "or", "not"], 'the boolean operators "and", "or" and "not"'),
    _tok("with", ["with", "as"], 'the keywords "with" and "as"'),
    Rule("digits", "regex", "digits of a number literal", pattern=r"[0-9]+"),
    Rule("comment", "regex", 'a comment: "#" and the rest of its line', pattern=r"#[^\n]*"),
    Rule("string", "string_literal", "text inside a string literal"),
    _tok("function_name", ["def"], 'the name of a function right after "def"', kind="after"),
    _tok("class_name", ["class"], 'the name of a class right after "class"', kind="after"),
)


def parse_rule(raw: Any, index: int) -> Rule:
    """A rule from its JSON form; a bad one raises CoderLoadError naming its index and the fix."""
    where = f"{FILE_NAME} rule {index}"
    if not isinstance(raw, dict):
        raise CoderLoadError(f"{where} is not an object: write each rule as a JSON object")
    need = {"tokens": ("tokens",), "after": ("tokens",), "regex": ("pattern",)}
    kind = raw.get("kind")
    if kind not in KINDS:
        raise CoderLoadError(f"{where} has unknown kind {kind!r}: use one of {', '.join(KINDS)}")
    for key in ("name", "explanation", *need.get(kind, ())):
        if not raw.get(key):
            raise CoderLoadError(f"{where} ({kind}) lacks {key!r}: add a non-empty {key!r}")
    tokens = raw.get("tokens", [])
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t.strip() for t in tokens):
        raise CoderLoadError(f"{where}: 'tokens' must be a list of non-blank strings")
    pattern = raw.get("pattern", "")
    if kind == "regex":
        try:
            re.compile(pattern)
        except (re.error, TypeError) as e:
            raise CoderLoadError(f"{where} has a bad regex {pattern!r} ({e}): fix 'pattern'") from e
    value = raw.get("value", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise CoderLoadError(f"{where} has value {value!r}: use a positive number")
    return Rule(
        name=str(raw["name"]),
        kind=kind,
        explanation=str(raw["explanation"]),
        tokens=tuple(t.strip() for t in tokens),
        pattern=pattern,
        value=float(value),
    )


def planted_factor(prev_id: int | None, token_id: int, latent: int, seed: int) -> float:
    """The factor in [0.5, 1] a latent's value is scaled by (scalar reference of ``_factors``)."""
    prev = _NO_PREV if prev_id is None else prev_id
    x = (token_id * 1_000_003 + prev * 8_191 + latent * 7_919 + seed * 104_729 + 1) % _P
    for _ in range(3):
        x = x * 48_271 % _P
    return 0.5 + 0.5 * x / (_P - 1)


def _factors(prev: torch.Tensor, tok: torch.Tensor, lat: torch.Tensor, seed: int) -> torch.Tensor:
    x = (tok * 1_000_003 + prev * 8_191 + lat * 7_919 + seed * 104_729 + 1) % _P
    for _ in range(3):
        x = x * 48_271 % _P
    return (0.5 + 0.5 * x.double() / (_P - 1)).float()


def string_literal_mask(text: str) -> np.ndarray:
    """Per character: inside a quoted string literal (quotes excluded). Line by line; ``'`` or
    ``"`` opens a literal that the same unescaped quote closes; a backslash escapes the next
    character; ``#`` outside a literal starts a comment (skipped to the end of the line)."""
    mask = np.zeros(len(text), dtype=bool)
    quote: str | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            quote = None
        elif quote is None:
            if c == "#":
                j = text.find("\n", i)
                i = n if j < 0 else j
                continue
            if c in "'\"":
                quote = c
        elif c == quote:
            quote = None
        else:
            mask[i] = True
            if c == "\\" and i + 1 < n and text[i + 1] != "\n":
                mask[i + 1] = True
                i += 1
        i += 1
    return mask


class PlantedCoder(SparseCoder):
    """Latent ``i`` fires where ``rules[i]`` holds; ``explanations[i]`` is its true explanation.

    ``d_in == 0`` means any hookpoint width: the model's activations are never read. Call
    ``bind_tokenizer`` before ``encode_tokens``.
    """

    format_name = "planted"
    reads_tokens = True

    def __init__(self, rules: Sequence[Rule], seed: int = 0) -> None:
        if not rules:
            raise CoderLoadError(f"a planted coder needs rules: add at least one to {FILE_NAME}")
        super().__init__(d_in=0, n_latents=len(rules))
        self.rules = list(rules)
        self.seed = int(seed)
        self.explanations = [r.explanation for r in self.rules]
        self._patterns = {
            i: re.compile(r.pattern) for i, r in enumerate(rules) if r.kind == "regex"
        }
        g = torch.Generator().manual_seed(self.seed)
        rows = torch.randn(len(rules), DECODER_WIDTH, generator=g)
        self.register_buffer("W_dec", rows / rows.norm(dim=-1, keepdim=True))
        self.values = torch.tensor([r.value for r in self.rules], dtype=torch.float32)
        self.vocab: list[str] = []
        self._lookup: dict[str, torch.Tensor] = {}

    @property
    def decoder_rows(self) -> torch.Tensor:
        return self.W_dec

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """Decode every vocabulary id once, one by one (special tokens decode to '')."""
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        self.vocab = ["" if i in special else tokenizer.decode([i]) for i in range(len(tokenizer))]
        stripped = [t.strip() for t in self.vocab]
        table = torch.zeros(2, len(self.vocab), self.n_latents, dtype=torch.bool)
        for j, rule in enumerate(self.rules):
            if rule.kind in ("tokens", "after"):
                wanted = set(rule.tokens)
                hits = [i for i, s in enumerate(stripped) if s in wanted]
                table[int(rule.kind == "after"), hits, j] = True
                if not hits:
                    log.warning(
                        "planted rule %d (%s) names no token of the vocabulary", j, rule.name
                    )
        self._lookup = {"cpu": table}

    def _table(self, device: torch.device) -> torch.Tensor:
        if not self._lookup:
            raise RuntimeError("planted coder has no tokenizer: call bind_tokenizer(tokenizer)")
        key = str(device)
        if key not in self._lookup:
            self._lookup[key] = self._lookup["cpu"].to(device)
        return self._lookup[key]

    @torch.no_grad()
    def fire_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """Where each latent fires, ``[B, T, n_latents]`` bool, for token ids ``[B, T]``."""
        table = self._table(ids.device)
        if ids.numel() and int(ids.max()) >= table.shape[1]:
            raise ValueError(
                f"token id {int(ids.max())} is outside the bound tokenizer's vocabulary "
                f"({table.shape[1]}): bind the tokenizer the windows were made with"
            )
        mask = table[0][ids]
        mask[:, 1:] |= table[1][ids[:, :-1]]
        context = [j for j, r in enumerate(self.rules) if r.kind in ("regex", "string_literal")]
        if context:
            extra = np.zeros((*ids.shape, self.n_latents), dtype=bool)
            for b, row in enumerate(ids.cpu().tolist()):
                extra[b] = self._context_mask(row, context)
            mask |= torch.from_numpy(extra).to(ids.device)
        return mask

    def _context_mask(self, row: list[int], latents: list[int]) -> np.ndarray:
        pieces = [self.vocab[i] for i in row]
        text = "".join(pieces)
        owner = np.repeat(np.arange(len(row)), [len(p) for p in pieces])  # char -> token
        out = np.zeros((len(row), self.n_latents), dtype=bool)
        for j in latents:
            if self.rules[j].kind == "string_literal":
                chars = string_literal_mask(text)
            else:
                chars = np.zeros(len(text), dtype=bool)
                for m in self._patterns[j].finditer(text):
                    chars[m.start() : m.end()] = True
            out[owner[chars], j] = True
        return out

    @torch.no_grad()
    def encode_tokens(self, ids: torch.Tensor) -> SparseBatch:
        """Nonzero activations of token ids ``[B, T]``; row ``b * T + t``, rows ascending."""
        ids = ids.long()
        b, t, lat = torch.nonzero(self.fire_mask(ids), as_tuple=True)
        tok = ids[b, t]
        prev = torch.where(t > 0, ids[b, (t - 1).clamp(min=0)], torch.full_like(tok, _NO_PREV))
        values = self.values.to(ids.device)[lat] * _factors(prev, tok, lat, self.seed)
        return SparseBatch(rows=b * ids.shape[1] + t, latents=lat, values=values)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError(
            "the planted coder reads token ids, not hidden states: call encode_tokens(ids)"
        )

    def encode_sparse(self, x: torch.Tensor) -> SparseBatch:
        return self.encode(x)  # raises

    def extra_repr(self) -> str:
        return f"format=planted, n_latents={self.n_latents}, seed={self.seed}, reads_tokens=True"


def write_planted_coder(
    folder: str | Path, rules: Iterable[Rule | dict[str, Any]] = DEFAULT_RULES, seed: int = 0
) -> Path:
    """Write ``folder/planted.json``; returns the folder (loadable with ``load_coder``)."""
    folder = Path(folder)
    items = [r.to_json() if isinstance(r, Rule) else dict(r) for r in rules]
    for i, raw in enumerate(items):
        parse_rule(raw, i)  # fail on write, not on a later load
    if not items:
        raise CoderLoadError(f"a planted coder needs rules: pass at least one to {FILE_NAME}")
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "version": VERSION, "seed": int(seed), "rules": items}
    (folder / FILE_NAME).write_text(json.dumps(doc, indent=2) + "\n")
    return folder


def load(folder: Path) -> PlantedCoder:
    """The planted coder in ``folder`` (its ``planted.json``)."""
    path = Path(folder) / FILE_NAME
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CoderLoadError(f"cannot read {path} ({e}): write it with write_planted_coder") from e
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise CoderLoadError(f'{path} is not a planted coder: set "format": "{FORMAT}"')
    if doc.get("version") != VERSION:
        raise CoderLoadError(f"{path} has version {doc.get('version')!r}: only {VERSION} is read")
    raw = doc.get("rules")
    if not isinstance(raw, list) or not raw:
        raise CoderLoadError(f'{path} has no rules: add a non-empty "rules" list')
    seed = doc.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise CoderLoadError(f"{path} has seed {seed!r}: use an integer")
    return PlantedCoder([parse_rule(r, i) for i, r in enumerate(raw)], seed=seed)


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        sys.exit("usage: python -m autointerp.coders.planted FOLDER  (writes DEFAULT_RULES)")
    sys.stdout.write(f"{write_planted_coder(sys.argv[1])}\n")
