"""The lexical baseline: no LLM. Deterministic answers to the structured ``task`` payloads that
explainers and scorers attach to their requests (schemas in docs/llm.md). Every answer carries
``metadata["baseline"] = True`` and the model name ``lexical-baseline``."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from functools import lru_cache
from typing import Any

from autointerp.llm.base import Backend, FatalError
from autointerp.llm.types import LLMRequest, LLMResponse

MODEL_NAME = "lexical-baseline"
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_STOP = frozenset(
    [
        "the",
        "and",
        "for",
        "with",
        "that",
        "this",
        "from",
        "are",
        "was",
        "were",
        "has",
        "have",
        "its",
        "not",
        "but",
        "any",
        "all",
        "can",
        "token",
        "tokens",
        "word",
        "words",
        "text",
        "latent",
        "fires",
        "activates",
        "activating",
        "on",
        "in",
        "of",
        "to",
        "a",
        "an",
    ]
)


def render_tokens(tokens: list[str]) -> str:
    """``['def', ' return']`` -> ``tokens: "def", " return"`` (JSON string quoting)."""
    return "tokens: " + ", ".join(json.dumps(t, ensure_ascii=False) for t in tokens)


def quoted_tokens(explanation: str) -> list[str]:
    """The quoted strings of an explanation; if none, its content words (fallback for free-text
    explanations written by an LLM)."""
    found: list[str] = []
    for m in _QUOTED.finditer(explanation):
        try:
            found.append(json.loads(f'"{m.group(1)}"'))
        except json.JSONDecodeError:
            found.append(m.group(1))
    found = [t for t in found if t]
    if found:
        return found
    words = [w for w in _WORD.findall(explanation) if w.lower() not in _STOP]
    return list(dict.fromkeys(words))


def explain(task: dict[str, Any]) -> dict[str, Any]:
    """Tokens most over-represented in activating positions (weighted by activation) relative to
    the contrast windows (or, without contrast, to all tokens of the examples)."""
    top_k = int(task.get("top_k", 5))
    weight: dict[str, float] = defaultdict(float)
    background: Counter[str] = Counter()
    for ex in task.get("examples", []):
        tokens, acts = ex["tokens"], ex.get("activations") or [1.0] * len(ex["tokens"])
        for tok, act in zip(tokens, acts, strict=False):
            if act > 0:
                weight[tok] += float(act)
        if not task.get("contrast"):
            background.update(tokens)
    for ex in task.get("contrast") or []:
        background.update(ex["tokens"] if isinstance(ex, dict) else ex)
    total_w = sum(weight.values())
    if total_w <= 0:
        return {"explanation": "tokens: (none)", "tokens": [], "scores": []}
    vocab = set(weight) | set(background)
    n_bg = sum(background.values())
    scores = {}
    for tok, w in weight.items():
        p = w / total_w
        q = (background[tok] + 0.5) / (n_bg + 0.5 * len(vocab))
        scores[tok] = p * math.log(p / q)
    ranked = sorted((t for t in scores if scores[t] > 0), key=lambda t: (-scores[t], t))
    chosen = [t for t in ranked if t.strip()][:top_k] or ranked[:top_k]
    return {
        "explanation": render_tokens(chosen),
        "tokens": chosen,
        "scores": [round(scores[t], 6) for t in chosen],
    }


@lru_cache(maxsize=1 << 17)
def _normal(token: str) -> str:
    """A token as keys are compared: stripped, lower-cased (tokens repeat: computed once)."""
    return token.strip().lower()


def _n_matches(tokens: list[str], keys: frozenset[str]) -> int:
    """How many of ``tokens`` match ``keys`` (the hot loop of every scoring task)."""
    return sum(map(keys.__contains__, map(_normal, tokens)))


@lru_cache(maxsize=1024)
def _keys(explanation: str) -> frozenset[str]:
    """The explanation's keys as tokens are compared (a latent's requests share one)."""
    return frozenset(t.strip().lower() for t in quoted_tokens(explanation) if t.strip())


def _as_tokens(ex: Any) -> list[str]:
    return list(ex["tokens"]) if isinstance(ex, dict) else list(ex)


def detect(task: dict[str, Any]) -> dict[str, Any]:
    """Per example: 1 when it contains any quoted token of the explanation (whole token, or as a
    substring of the joined text for multi-token quotes), with probability 1 - 0.5**(n + 1)
    for n matches, and 0.0 without match."""
    keys = _keys(task.get("explanation", ""))
    labels, probs = [], []
    for ex in task.get("examples", []):
        tokens = _as_tokens(ex)
        text = "".join(tokens).lower()
        n = _n_matches(tokens, keys)
        n += sum(1 for k in keys if " " in k and k in text)
        labels.append(1 if n else 0)
        probs.append(round(1.0 - 0.5 ** (n + 1), 6) if n else 0.0)
    return {"labels": labels, "probabilities": probs}


def simulate(task: dict[str, Any]) -> dict[str, Any]:
    """Per example and token: 10 where the token is one of the explanation's quoted tokens."""
    keys = _keys(task.get("explanation", ""))
    return {
        "activations": [
            [10 if k in keys else 0 for k in map(_normal, _as_tokens(ex))]
            for ex in task.get("examples", [])
        ]
    }


def fuzz(task: dict[str, Any]) -> dict[str, Any]:
    """Per example: 1 when at least half of its highlighted tokens match the explanation's
    keys (and at least one token is highlighted); probability = the matching fraction."""
    keys = _keys(task.get("explanation", ""))
    labels, probs = [], []
    for ex in task.get("examples", []):
        tokens, marks = ex["tokens"], ex.get("highlighted") or []
        marked = [t for t, m in zip(tokens, marks, strict=False) if m]
        frac = _n_matches(marked, keys) / len(marked) if marked else 0.0
        labels.append(1 if marked and frac >= 0.5 else 0)
        probs.append(round(frac, 6))
    return {"labels": labels, "probabilities": probs}


def intruder(task: dict[str, Any]) -> dict[str, Any]:
    """The example whose highlighted tokens the others share least: per example, the mean over
    its distinct highlighted tokens (stripped, lower-cased) of the share of the OTHER examples
    that highlight that token too (0 without highlights); the intruder is the lowest (ties: the
    first). ``intruder`` is 1-based, as the examples are numbered."""
    sets = []
    for ex in task.get("examples", []):
        marks = ex.get("highlighted") or []
        marked = {t.strip().lower() or t for t, m in zip(ex["tokens"], marks, strict=False) if m}
        sets.append(marked)
    if not sets:
        raise ValueError("no examples")
    others = max(1, len(sets) - 1)
    scores = [
        sum(sum(t in o for j, o in enumerate(sets) if j != i) for t in s) / (len(s) * others)
        if s
        else 0.0
        for i, s in enumerate(sets)
    ]
    return {"intruder": scores.index(min(scores)) + 1, "scores": [round(x, 6) for x in scores]}


def steer_judge(task: dict[str, Any]) -> dict[str, Any]:
    """The set of steered completions that mentions the explanation's keys most (occurrences of
    each key, case-insensitive, over the set's texts); ties: the first. ``choice`` is 1-based."""
    keys = [k.strip().lower() for k in quoted_tokens(task.get("explanation", "")) if k.strip()]
    sets = task.get("sets") or []
    if not sets:
        raise ValueError("no sets")
    counts = [sum(" ".join(s).lower().count(k) for k in keys) for s in sets]
    return {"choice": counts.index(max(counts)) + 1, "counts": counts}


def explain_output(task: dict[str, Any]) -> dict[str, Any]:
    """The tokens the latent promotes: its steering view's top tokens when given, else its
    logit-lens top tokens (``top_k`` of them)."""
    top = task.get("steer_top") or task.get("lens_top") or []
    shown = [t for t in top if t.strip()][: int(task.get("top_k", 5))]
    return {"explanation": render_tokens(shown) if shown else "no output tokens"}


TASKS = {
    "explain": explain,
    "detect": detect,
    "simulate": simulate,
    "fuzz": fuzz,
    "intruder": intruder,
    "steer_judge": steer_judge,
    "explain_output": explain_output,
}


class LexicalBackend(Backend):
    name = "lexical"
    model = MODEL_NAME
    local = True
    cacheable = False
    baseline = True

    async def complete(self, request: LLMRequest) -> LLMResponse:
        task = request.task or {}
        fn = TASKS.get(str(task.get("kind")))
        if fn is None:
            raise FatalError(
                f"the lexical baseline answers only structured tasks {sorted(TASKS)}; "
                f"got task kind {task.get('kind')!r} (attach request.task)"
            )
        try:
            result = fn(task)
        except (KeyError, TypeError, ValueError) as e:
            raise FatalError(f"malformed {task.get('kind')} task: {e!r}") from e
        text = result["explanation"] if fn in (explain, explain_output) else json.dumps(result)
        return LLMResponse(
            text=text,
            parsed=result,
            finish_reason="stop",
            backend=self.name,
            model=self.model,
            metadata={"baseline": True},
        )
