"""The detection / fuzzing prompt layout: windows shown plain in both, fuzzing's marks listed
after them (autointerp.text.marks, read back by marked_spans and by the scripted judge), the
exact rendered text of a small example, and the explain windows cut around their peak."""

from __future__ import annotations

import numpy as np
from scripted_judge import excerpts_of, marked_of

from autointerp import prompts
from autointerp.explainers.prompt import around_peak
from autointerp.scorers.judge import Item, marks_list, request
from autointerp.text import _ordinal, marked_spans, marks, occurrences, token_spans


def test_marks_quote_each_run_and_name_a_later_place() -> None:
    # " x" occurs at offsets 3 and 7: the first run is its first place, the second its 2nd
    assert marks(["x", " =", " x", " +", " x", "\n"], [0, 0, 1, 0, 1, 0]) == '" x", " x" (2nd)'
    assert marks(["x", " =", " x", " +", " x"], [0, 0, 0, 0, 1]) == '" x" (2nd)'
    # places overlap: "aa" starts at 0 and at 1 in "aaa"
    assert occurrences("aaa", "aa") == [0, 1]
    assert marks(["a", "a", "a"], [0, 1, 1]) == '"aa" (2nd)'
    # consecutive marked tokens are one run; quotes and newlines are JSON-escaped
    assert marks(["say", ' "', "hi", '"', "\n"], [0, 1, 1, 0, 1]) == '" \\"hi", "\\n"'
    assert marks(["a", "b"], [0, 0]) == "none"
    assert [_ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "111th"
    ]  # fmt: skip


def test_marked_spans_reads_marks_back() -> None:
    rng = np.random.default_rng(0)
    alphabet = ["a", " a", '"', ",", " (2nd)", "\n", "\\", "b", " ", "aa", '", "']
    for _ in range(500):
        tokens = list(rng.choice(alphabet, size=int(rng.integers(1, 12))))
        mask = rng.random(len(tokens)) < 0.4
        text = "".join(tokens)
        assert marked_spans(text, marks(tokens, mask)) == token_spans(tokens, mask)
    assert marked_spans("abc", "none") == []
    assert marked_spans("abc", '"z"') is None  # text the window lacks
    assert marked_spans("abc", '"b" (2nd)') is None  # a place it does not have


def items() -> list[Item]:
    a = ["def", " f", "(x", "):", "\n", "    return", " x"]
    b = ["x", " =", " x", " +", " 1"]
    return [
        Item(text="".join(a), tokens=a, truth=True, meta={}, highlighted=[0, 0, 0, 0, 0, 1, 0]),
        Item(text="".join(b), tokens=b, truth=False, meta={}, highlighted=[0, 0, 1, 0, 0]),
    ]


def test_fuzzing_prompt_is_the_detection_prompt_then_the_marks() -> None:
    def user(name: str, **fields: str) -> str:
        req = request(
            "judge_system", name, 'the word "return"', items(), {}, 50, False, {}, **fields
        )
        assert [m.role for m in req.messages] == ["system", "user"]
        assert req.messages[0].content == prompts.text("judge_system")
        return req.messages[1].content

    detection = user("detection_user")
    fuzzing = user("fuzzing_user", marks=marks_list(items()))
    windows = "1.\ndef f(x):\n    return x\n\n2.\nx = x + 1"
    assert detection == f'{windows}\n\nDescription: the word "return"'
    assert fuzzing == (
        f'{windows}\n\nMarked:\n1. "    return"\n2. " x"\n\nDescription: the word "return"'
    )
    # the scripted judge reads back what a model is shown
    assert excerpts_of(fuzzing) == excerpts_of(detection) == [i.text for i in items()]
    assert marked_of(detection) is None
    assert marked_of(fuzzing) == [[(10, 20)], [(3, 5)]]  # "    return" and the 1st " x"


def test_explain_windows_are_cut_around_their_peak() -> None:
    acts = np.array([0, 1, 0, 0, 5, 0, 2, 0], dtype=np.float32)
    r = {
        "tokens": np.arange(8),
        "strings": [str(i) for i in range(8)],
        "activations": acts,
        "activations_norm": acts * 2,
        "kind": "activating",
    }
    cut = around_peak(r, 2, 1)
    assert cut["strings"] == ["2", "3", "4", "5"] and cut["kind"] == "activating"
    assert cut["tokens"].tolist() == [2, 3, 4, 5]
    assert cut["activations"].tolist() == [0, 0, 5, 0]
    assert cut["activations_norm"].tolist() == [0, 0, 10, 0]
    assert around_peak(r, 10, 10)["strings"] == r["strings"]  # clipped to the window
    assert around_peak(r, None, 0)["strings"] == ["0", "1", "2", "3", "4"]
    assert around_peak(r, None, None) is r
