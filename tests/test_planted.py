"""The planted coder: rules applied exactly (vs a brute-force reference), loaded and cached like
any coder, bad files refused with one-line errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from autointerp.coders.base import CoderLoadError
from autointerp.coders.loader import detect_format, load_coder
from autointerp.coders.planted import (
    DEFAULT_RULES,
    PlantedCoder,
    Rule,
    planted_factor,
    string_literal_mask,
    write_planted_coder,
)

DEMO_LM = Path(__file__).resolve().parents[1] / "autointerp" / "assets" / "demo" / "lm"

SOURCE = """import os
from x import y  # a comment with 'quotes' and 42
def foo(self, bar=None):
    if bar == 10 or bar != 2.5:
        return "it\\'s #not a comment" + 'single "dq" ' + ""
    raise ValueError(f"bad {bar}")
class Fox(object):
    def jump(self): lambda z: z is True
        with open(z) as f:
            for line in f: pass
"""

CUSTOM: list[dict[str, Any]] = [
    {"name": "kw", "kind": "tokens", "tokens": ["def", "return"], "explanation": '"def"'},
    {"name": "eq", "kind": "tokens", "tokens": ["=="], "explanation": '"=="', "value": 3.0},
    {"name": "num", "kind": "regex", "pattern": r"[0-9]+(\.[0-9]+)?", "explanation": "numbers"},
    {"name": "empty", "kind": "regex", "pattern": r"(?=def)", "explanation": "nothing"},
    {"name": "str", "kind": "string_literal", "explanation": "strings", "value": 0.5},
    {"name": "fn", "kind": "after", "tokens": ["def"], "explanation": "function names"},
    {"name": "cls", "kind": "after", "tokens": ["class"], "explanation": "class names"},
]


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_LM, local_files_only=True)


def _bound(rules: Any, tokenizer: Any, seed: int = 0) -> PlantedCoder:
    from autointerp.coders.planted import parse_rule

    parsed = [r if isinstance(r, Rule) else parse_rule(r, i) for i, r in enumerate(rules)]
    coder = PlantedCoder(parsed, seed=seed)
    coder.bind_tokenizer(tokenizer)
    return coder


# --- an independent, slow reference ------------------------------------------------------


def _inside_string(line: str, p: int) -> bool:
    """Whether character ``p`` of ``line`` is inside a quoted literal (rescans the prefix)."""
    quote, escaped = None, False
    for c in line[:p]:
        if quote is None:
            if c == "#":
                return False
            if c in "'\"":
                quote = c
        elif escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c == quote:
            quote = None
    return quote is not None and (escaped or line[p] != quote)


def _string_chars(text: str) -> list[bool]:
    out: list[bool] = []
    for line in text.split("\n"):
        out += [_inside_string(line, p) for p in range(len(line))] + [False]
    return out[: len(text)]


def reference(rules: list[Rule], pieces: list[str], ids: list[int], seed: int) -> dict:
    """{(t, latent): value} for one window, token by token and rule by rule."""
    text = "".join(pieces)
    starts = np.cumsum([0] + [len(p) for p in pieces])
    inside = _string_chars(text)
    out: dict[tuple[int, int], float] = {}
    for j, rule in enumerate(rules):
        spans = [m.span() for m in re.finditer(rule.pattern, text)] if rule.kind == "regex" else []
        for t, piece in enumerate(pieces):
            s, e = int(starts[t]), int(starts[t + 1])
            if rule.kind == "tokens":
                fire = piece.strip() in rule.tokens
            elif rule.kind == "after":
                fire = t > 0 and pieces[t - 1].strip() in rule.tokens
            elif rule.kind == "regex":
                fire = any(a < b and a < e and b > s for a, b in spans)
            else:
                fire = any(inside[s:e])
            if fire:
                prev = ids[t - 1] if t > 0 else None
                out[(t, j)] = rule.value * planted_factor(prev, ids[t], j, seed)
    return out


def got_dict(coder: PlantedCoder, ids: torch.Tensor) -> list[dict]:
    sb = coder.encode_tokens(ids)
    assert torch.equal(sb.rows, sb.rows.sort().values)
    per: list[dict] = [{} for _ in range(ids.shape[0])]
    for r, lat, v in zip(sb.rows.tolist(), sb.latents.tolist(), sb.values.tolist(), strict=True):
        per[r // ids.shape[1]][(r % ids.shape[1], lat)] = v
    return per


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys(), sorted(set(got) ^ set(want))
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-6), key


# --- tests --------------------------------------------------------------------------------


def test_string_literal_mask_hand_labelled() -> None:
    text = "x = \"a\\\"b\" + 'c#d' # 'e'\nprint(\"f\") + 'it''s'\ny = \"open"
    chars = "".join(c for c, m in zip(text, string_literal_mask(text), strict=True) if m)
    assert chars == 'a\\"bc#dfits' + "open"
    assert _string_chars(text) == string_literal_mask(text).tolist()


def test_encode_tokens_matches_reference(tokenizer: Any) -> None:
    rules = CUSTOM
    coder = _bound(rules, tokenizer, seed=3)
    full = tokenizer(SOURCE)["input_ids"]
    ids = torch.tensor([full[0:40], full[30:70], full[60:100]])  # windows start mid-text
    got = got_dict(coder, ids)
    fired: set[tuple[int, str, str]] = set()
    for b, row in enumerate(ids.tolist()):
        pieces = ["" if i in tokenizer.all_special_ids else tokenizer.decode([i]) for i in row]
        assert_same(got[b], reference(coder.rules, pieces, row, seed=3))
        fired |= {(b, pieces[t].strip(), coder.rules[j].name) for t, j in got[b]}
    # hand-labelled spot checks
    want = {(0, "def", "kw"), (0, "f", "fn"), (0, "4", "num"), (0, "2", "num"), (1, "==", "eq")}
    want |= {(1, "10", "num"), (1, "it", "str"), (1, "#", "str"), (2, "F", "cls")}
    assert want <= fired, want - fired
    assert (0, "quot", "str") not in fired  # quotes inside a comment are no literal
    assert {k[1] for g in got for k in g} >= {0, 2, 4, 5}
    assert 3 not in {k[1] for g in got for k in g}  # zero-length matches mark nothing
    values = coder.encode_tokens(ids).values
    assert values.min() > 0 and values.max() <= 3.0 and len(set(values.tolist())) > 10


def test_default_rules_on_source(tokenizer: Any) -> None:
    coder = _bound(DEFAULT_RULES, tokenizer)
    assert coder.n_latents == len(DEFAULT_RULES) == len(coder.explanations)
    ids = torch.tensor([tokenizer(SOURCE)["input_ids"]])
    pieces = ["" if i in tokenizer.all_special_ids else tokenizer.decode([i]) for i in ids[0]]
    got = got_dict(coder, ids)[0]
    assert_same(got, reference(coder.rules, pieces, ids[0].tolist(), seed=0))
    assert len({j for _, j in got}) == coder.n_latents  # every default latent fires here
    on_device = coder.encode_tokens(ids[:, 1:])  # the cache passes windows without BOS
    assert len(on_device.rows) == len(got)


def test_default_rules_name_single_tokens_of_the_demo_vocabulary(tokenizer: Any) -> None:
    vocab = {tokenizer.decode([i]).strip() for i in range(len(tokenizer))}
    for rule in DEFAULT_RULES:
        assert set(rule.tokens) <= vocab, rule.name
        if rule.kind == "tokens":
            assert all(f'"{t}"' in rule.explanation for t in rule.tokens), rule.name
    assert len({r.name for r in DEFAULT_RULES}) == len(DEFAULT_RULES)


def test_detect_load_and_refuse_hidden_states(tmp_path: Path) -> None:
    folder = write_planted_coder(tmp_path / "planted", DEFAULT_RULES, seed=5)
    assert detect_format(folder) == "planted"
    coder = load_coder(str(folder))
    assert isinstance(coder, PlantedCoder) and coder.reads_tokens and coder.d_in == 0
    assert coder.seed == 5 and [r.name for r in coder.rules] == [r.name for r in DEFAULT_RULES]
    rows = coder.decoder_rows
    assert rows.shape == (len(DEFAULT_RULES), 64)
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(len(DEFAULT_RULES)))
    assert torch.equal(rows, load_coder(str(folder)).decoder_rows)  # seeded
    with pytest.raises(TypeError, match="reads token ids"):
        coder.encode_sparse(torch.zeros(2, 8))
    with pytest.raises(RuntimeError, match="bind_tokenizer"):
        coder.encode_tokens(torch.zeros(1, 4, dtype=torch.long))


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"rules": [{"name": "a", "kind": "bigram", "explanation": "x"}]}, "rule 0 has unknown"),
        ({"rules": [{"name": "a", "kind": "regex", "pattern": "(", "explanation": "x"}]}, "rule 0"),
        ({"rules": [CUSTOM[0], {"name": "a", "kind": "tokens", "explanation": "x"}]}, "rule 1"),
        ({"rules": [{"name": "a", "kind": "after", "tokens": ["def"]}]}, "lacks 'explanation'"),
        ({"rules": [{**CUSTOM[0], "value": -1}]}, "positive number"),
        ({"rules": []}, "no rules"),
        ({"format": "other", "rules": CUSTOM}, "not a planted coder"),
        ({"version": 2, "rules": CUSTOM}, "version 2"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path: Path, doc: dict, match: str) -> None:
    (tmp_path / "planted.json").write_text(
        json.dumps({"format": "autointerp-planted", "version": 1, "seed": 0, **doc})
    )
    with pytest.raises(CoderLoadError, match=match) as e:
        load_coder(str(tmp_path))
    assert "\n" not in str(e.value) and ":" in str(e.value)


def test_cache_activations_with_planted_coder(tmp_path: Path, tokenizer: Any) -> None:
    import polars as pl

    from autointerp.cache import ActivationCache, cache_activations
    from autointerp.config import load_config

    folder = write_planted_coder(tmp_path / "planted", DEFAULT_RULES, seed=1)
    cfg = load_config(
        None,
        {
            "run_dir": str(tmp_path / "run"),
            "subject.model": str(DEMO_LM),
            "subject.device": "cpu",
            "coder.path": str(folder),
            "dataset.source": "stdlib",
            "cache.hookpoints": ["model.layers.0"],
            "cache.n_tokens": 16384,
            "cache.ctx_len": 64,
            "cache.batch_size": 32,
            "cache.chunk_windows": 128,
        },
    )
    cache_activations(cfg, progress=False)
    cache = ActivationCache(cfg.run_dir, "model.layers.0")
    assert cache.meta["coder_format"] == "planted" and cache.meta["d_in"] == 0
    tokens = pl.read_parquet(cache.root / "tokens.parquet")["tokens"].to_list()
    assert len(tokens) == 256 and all(len(t) == 64 for t in tokens)
    df = cache.read_latents(0, len(DEFAULT_RULES))
    got: list[dict] = [{} for _ in tokens]
    for s, p, lat, v in df.select("seq_id", "pos", "latent", "value").iter_rows():
        got[s][(p - 1, lat)] = v
    vocab = ["" if i in tokenizer.all_special_ids else tokenizer.decode([i]) for i in range(4096)]
    rules = list(DEFAULT_RULES)
    for s, window in enumerate(tokens):
        body = window[1:]  # position 0 is BOS, excluded
        assert_same(got[s], reference(rules, [vocab[i] for i in body], body, seed=1))
    fired = df.group_by("latent").len()
    assert fired.height == len(DEFAULT_RULES)  # every planted latent fires on stdlib source
