"""Display text: tokens decoded one by one, highlighting that round-trips; every prompt renders."""

from __future__ import annotations

import json
import string

import numpy as np
import pytest
from transformers import AutoTokenizer

from autointerp import prompts
from autointerp.config import DEMO_MODEL
from autointerp.text import Vocab, excerpts, highlight, highlighted_spans, one_line, token_spans


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(DEMO_MODEL, local_files_only=True)


def test_vocab_decodes_token_by_token_never_batch_decode(tokenizer, monkeypatch) -> None:
    def boom(*a, **k):
        raise AssertionError("batch_decode joins a 1-D tensor into one string: never use it")

    monkeypatch.setattr(type(tokenizer), "batch_decode", boom)
    vocab = Vocab.from_tokenizer(tokenizer)
    assert len(vocab.strings) == len(tokenizer)
    ids = tokenizer("def f(x):\n    return x")["input_ids"]
    assert vocab.tokens(ids) == [tokenizer.decode([i]) for i in ids]
    assert len(vocab.tokens(ids)) == len(ids)  # one string per token, not one joined string


def test_highlighted_window_round_trips_to_its_tokens(tokenizer) -> None:
    vocab = Vocab.from_tokenizer(tokenizer)
    text = "for item in items:\n    if item.value > 0 and x < y:\n        total += item.value"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    strings = vocab.tokens(ids)
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random(len(ids)) < 0.3
        text = highlight(strings, mask)
        plain, spans = highlighted_spans(text)
        # a < or > touching a marker is shown as ‹ / › (one character for one)
        assert plain.replace("‹", "<").replace("›", ">") == "".join(strings) == vocab.text(ids)
        assert spans == token_spans(strings, mask)
        # every highlighted token's text lies inside a marked span, every other outside
        pos = 0
        for tok, on in zip(strings, mask, strict=True):
            inside = any(a <= pos and pos + len(tok) <= b for a, b in spans)
            assert inside == bool(on) or tok == ""
            pos += len(tok)


def test_markers_stay_unambiguous_next_to_shift_operators_and_doctest_prompts() -> None:
    """Windows holding ``>>>``, ``<<`` or a ``<`` / ``>`` beside a mark: the text never
    forms ``<<`` / ``>>`` outside the markers, every marked run parses back to exactly its
    tokens (as shown), and the text between the marks is the window's own (one-for-one)."""
    from scripted_judge import SPAN

    cases = [
        ([">>>", " x", " <<", " 2", ">>", "="], [0, 1, 0, 1, 1, 0]),
        (["a", "<", "<", "<", ">", ">", "b"], [0, 1, 0, 0, 1, 1, 0]),
        (["x", " <", "y", ">"], [0, 0, 1, 0]),
        ([">>>", " print", "(", "1", " <<", " 3", ")"], [0, 1, 0, 0, 1, 0, 0]),
        (["<<<", ">>"], [1, 1]),
    ]
    for strings, mask in cases:
        text = highlight(strings, mask)
        runs = sum(1 for i, on in enumerate(mask) if on and (i == 0 or not mask[i - 1]))
        assert text.count("<<") == text.count(">>") == runs, text
        assert "<<<" not in text and ">>>" not in text
        plain, spans = highlighted_spans(text)
        assert len(plain) == len("".join(strings))
        assert plain.replace("‹", "<").replace("›", ">") == "".join(strings)
        assert spans == token_spans(strings, mask)
        marked = ["".join(t for t, on in zip(strings, mask, strict=True) if on)]
        found = [m.replace("‹", "<").replace("›", ">") for m in SPAN.findall(text)]
        assert "".join(found) == marked[0]
    # a window with no mark and no marker-like text is shown exactly as it is
    assert highlight(["a < b", " > c"], [0, 0]) == "a < b > c"
    assert highlight([">>>", " x"], [1, 0]) == "<<›››>> x"


def test_highlight_merges_runs() -> None:
    assert highlight(["a", "b", "c", "d"], [False, True, True, False]) == "a<<bc>>d"
    assert highlight(["a", "b"], [True, True]) == "<<ab>>"


def test_every_prompt_template_renders() -> None:
    names = prompts.names()
    assert {"explain_system", "judge_system", "fuzzing_user", "simulation_logprobs"} <= set(names)
    for name in names:
        fields = {
            m.group("named") or m.group("braced")
            for m in string.Template.pattern.finditer(prompts.text(name))
            if m.group("named") or m.group("braced")
        }
        out = prompts.render(name, **{f: f"<{f}>" for f in fields})
        assert "$" not in out.replace("$$", "")
        for f in fields:
            assert f"<{f}>" in out
    turns = prompts.fewshot("explain_fewshot")
    assert [t.role for t in turns] == ["user", "assistant"] * 3
    answers = [t.content for t in turns[1::2]]
    assert all('"explanation"' in a for a in answers) and len(set(answers)) == 3


def test_excerpt_blocks_and_one_line() -> None:
    assert excerpts(["a\nb", "c"]) == "1.\na\nb\n\n2.\nc"
    assert one_line("a\nb") == "a↵b"


def test_window_strings_handles_skipped_rows() -> None:
    import polars as pl

    vocab = Vocab(["a", "b", "c"])
    col = pl.Series([[0, 1], None, [2, 2, 0], [9]], dtype=pl.List(pl.Int32))
    assert vocab.window_strings(col) == [["a", "b"], [], ["c", "c", "a"], [""]]


def test_json_strings_is_json_dumps_character_for_character() -> None:
    from autointerp.text import json_strings

    cases = [[], [""], ["def", " return"], ['"q"', "back\\slash", "\t\n", "é₀", "\x00\x1f", "</"]]
    for strings in cases:
        assert json_strings(strings) == json.dumps(strings, ensure_ascii=False)
        assert json_strings(tuple(strings)) == json.dumps(strings, ensure_ascii=False)
