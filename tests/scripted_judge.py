"""A scripted LLM for the fake OpenAI-compatible server: it reads our prompts the way a model
would (only the text it is sent) and answers explain / detection / fuzzing / simulation
requests with rules the test chooses. The defaults follow the explanation's quoted tokens."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from autointerp.text import marked_spans

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
SPAN = re.compile(r"<<(?!<)(.+?)>>(?!>)", re.DOTALL)
_EXCERPT = re.compile(
    r"^(\d+)\.\n(.*?)(?=\n\n\d+\.\n|\n\nMarked:\n|\n\nDescription: |\Z)",
    re.DOTALL | re.MULTILINE,
)
_DESCRIPTION = re.compile(r"^Description: (.*)$", re.MULTILINE)
_MARKED = re.compile(r"\n\nMarked:\n((?:\d+\. .*(?:\n|$))+)\nDescription: ")
_MARK_LINE = re.compile(r"^(\d+)\. (.*)$", re.MULTILINE)
Spans = list[tuple[int, int]]


def excerpts_of(user: str) -> list[str]:
    """The numbered windows of a judge prompt, as shown."""
    return [m.group(2) for m in _EXCERPT.finditer(user)]


def marked_of(user: str) -> list[Spans] | None:
    """Per window, the character spans its ``Marked:`` line names (fuzzing); None when the
    prompt has no such list (detection). A line naming text its window lacks: no spans."""
    found = _MARKED.findall(user)
    if not found:
        return None
    windows = excerpts_of(user)
    lines = dict(_MARK_LINE.findall(found[-1]))
    return [marked_spans(w, lines.get(str(i), "none")) or [] for i, w in enumerate(windows, 1)]


def keys(explanation: str) -> set[str]:
    return {json.loads(f'"{m}"').strip() for m in _QUOTED.findall(explanation)} - {""}


def default_explain(user: str) -> str:
    spans = Counter(s.strip() for s in SPAN.findall(user) if s.strip())
    top = spans.most_common(1)[0][0] if spans else "nothing"
    return f'the token "{top}"'


def default_detect(explanation: str, text: str) -> bool:
    return any(k in text for k in keys(explanation))


def default_fuzz(explanation: str, text: str, spans: Spans) -> bool:
    ks = keys(explanation)
    return bool(spans) and all(text[a:b].strip() in ks for a, b in spans)


def default_simulate(explanation: str, tokens: list[str]) -> list[int]:
    ks = keys(explanation)
    return [10 if t.strip() in ks else 0 for t in tokens]


@dataclass
class ScriptedJudge:
    """Callable as a FakeServer responder; records what it was asked."""

    explain: Callable[[str], str] = default_explain
    detect: Callable[[str, str], bool] = default_detect
    fuzz: Callable[[str, str, Spans], bool] = default_fuzz  # (explanation, text, spans)
    simulate: Callable[[str, list[str]], list[int]] = default_simulate
    seen: list[tuple[str, str]] = field(default_factory=list)  # (task, user message)
    record: bool = True  # keep what was asked in ``seen`` (off in long benchmarks)

    def _seen(self, task: str, user: str) -> None:
        if self.record:
            self.seen.append((task, user))

    def __call__(self, body: dict[str, Any]) -> str:
        messages = body.get("messages") or []
        system = messages[0]["content"] if messages else ""
        user = messages[-1]["content"] if messages else ""
        if "You describe one feature" in system:
            self._seen("explain", user)
            return json.dumps({"explanation": self.explain(user)})
        found = _DESCRIPTION.findall(user)  # after the excerpts (prefix-cache order)
        explanation = found[-1] if found else ""
        examples = excerpts_of(user)
        if "You test a description" in system:
            marked = marked_of(user)
            if marked is not None:  # fuzzing: the windows, then their marks
                self._seen("fuzzing", user)
                answers = [
                    int(self.fuzz(explanation, ex, sp))
                    for ex, sp in zip(examples, marked, strict=True)
                ]
                return json.dumps({"answers": answers})
            self._seen("detection", user)
            return json.dumps({"answers": [int(self.detect(explanation, ex)) for ex in examples]})
        if "predict, from its description" in system:
            self._seen("simulation", user)
            acts = [self.simulate(explanation, json.loads(ex)) for ex in examples]
            return json.dumps({"activations": acts})
        return "I do not understand."


# -- a judge that reads the explanation's words ------------------------------------------------
# It gets only the prompt text. From the explanation it takes what the words say (quoted
# tokens; "digits"/"number"; "comment"; "string literal"; "after X") and marks, per character
# of a window's text, where such a feature would fire. It never sees activations, the planted
# generator or any answer key, so it is right only as far as the explanation is.
_WORDISH = re.compile(r"^\w+$")


def _literal_mask(text: str) -> np.ndarray:
    """Characters between a quote and the same quote on one line (a ``#`` outside quotes ends
    the line's code)."""
    mask = np.zeros(len(text), dtype=bool)
    open_quote: str | None = None
    skip = False
    for i, c in enumerate(text):
        if c == "\n":
            open_quote, skip = None, False
        elif skip:
            continue
        elif open_quote is None:
            if c == "#":
                skip = True
            elif c in "'\"":
                open_quote = c
        elif c == open_quote and text[i - 1] != "\\":
            open_quote = None
        else:
            mask[i] = True
    return mask


def _pattern_mask(text: str, pattern: str, group: int = 0) -> np.ndarray:
    mask = np.zeros(len(text), dtype=bool)
    for m in re.finditer(pattern, text):
        mask[m.start(group) : m.end(group)] = True
    return mask


def _standalone(word: str) -> str:
    """``word`` not glued to more of its own kind (letters to letters, symbols to symbols)."""
    if _WORDISH.match(word):
        return rf"(?<!\w){re.escape(word)}(?!\w)"
    return rf"(?<![^\w\s]){re.escape(word)}(?![^\w\s])"


def stated_mask(explanation: str, text: str) -> np.ndarray:
    """Per character of ``text``: would the feature, as ``explanation`` words it, fire there?"""
    words = explanation.lower()
    quoted = sorted(keys(explanation), key=len, reverse=True)
    if "string literal" in words or "inside a string" in words:
        return _literal_mask(text)
    if "comment" in words:
        return _pattern_mask(text, r"#[^\n]*")
    if "digit" in words or "number" in words:
        return _pattern_mask(text, r"[0-9]+")
    if (" after " in f" {words} " or "follow" in words) and quoted:
        lead = "|".join(_standalone(q) for q in quoted)
        return _pattern_mask(text, rf"(?:{lead})\s+([A-Za-z_]\w*)", group=1)
    if not quoted:
        quoted = [w for w in re.findall(r"[A-Za-z_]\w{2,}", explanation) if len(w) > 3]
    if not quoted:
        return np.zeros(len(text), dtype=bool)
    return _pattern_mask(text, "|".join(_standalone(q) for q in quoted))


def reading_detect(explanation: str, text: str) -> bool:
    return bool(stated_mask(explanation, text).any())


def reading_fuzz(explanation: str, text: str, spans: Spans) -> bool:
    """1 when every highlighted span falls where the explanation says the feature fires."""
    if not spans:
        return False
    mask = stated_mask(explanation, text)
    return all(mask[a:b].any() for a, b in spans)


def reading_simulate(explanation: str, tokens: list[str]) -> list[int]:
    mask = stated_mask(explanation, "".join(tokens))
    out, pos = [], 0
    for t in tokens:
        out.append(10 if mask[pos : pos + len(t)].any() else 0)
        pos += len(t)
    return out


def reading_judge(**overrides: Any) -> ScriptedJudge:
    """A ScriptedJudge whose detection, fuzzing and simulation answers follow
    :func:`stated_mask` (``overrides`` replace any of them)."""
    rules: dict[str, Any] = {
        "detect": reading_detect,
        "fuzz": reading_fuzz,
        "simulate": reading_simulate,
    }
    return ScriptedJudge(**{**rules, **overrides})
