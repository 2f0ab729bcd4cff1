"""The one-window judge format of detection and fuzzing, for small local judges.

A 1.5B model shown 20 windows in one prompt and asked for one JSON list of 0/1 verdicts
answers yes to the first window and no to the rest (README, "With Qwen2.5-Coder-1.5B-Instruct
as judge"). In this format each window is a prompt of its own: short instructions (system
prompt), the window (``Excerpt:``; fuzzing adds its marked tokens), then the question, which
names the explanation ("Does the excerpt contain <explanation>?"); the judge answers one
word, Yes or No, and P(yes) is read off the answer token's top logprobs. Asked whether "a
feature, as described, fires" with the explanation before the window, Qwen2.5-Coder-1.5B gave
every window about the same P(yes); asked whether the excerpt contains what the explanation
names, it separated activating from contrast windows (README). A prefix cache reuses the
instructions across all prompts and a window's detection prompt up to the end of its text
for its fuzzing prompt; the explanation (a few tokens) is computed per window.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from autointerp import prompts
from autointerp.llm.config import parse_model_spec
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse, SamplingParams, TokenLogprob

Format = Literal["auto", "batch", "single"]
SYSTEM = "judge_single_system"
MAX_TOKENS = 3  # "Yes", "." and the end token: a longer answer is cut, its first word read
TOP_LOGPROBS = 10
PUNCT = ' \t\n"[]{}(),:.!'
_WORDS = {"0": "0", "1": "1", "yes": "1", "no": "0", "true": "1", "false": "0"}


def answer_digit(token: str) -> str | None:
    """The answer "0" or "1" of a token: 0/1 or yes/no/true/false in any case, with or without the
    space or punctuation a tokenizer glues to it (" Yes", "[1", "1,", "No.")."""
    return _WORDS.get(token.strip(PUNCT).lower())


def resolve_format(fmt: Format, llm_model: str) -> Literal["batch", "single"]:
    """``auto``: one window per prompt for a small local judge (in-process vLLM, or a model of
    ``autointerp models``' catalog behind a server), numbered batches for API models."""
    if fmt != "auto":
        return fmt
    from autointerp.models import catalog  # the catalog names the small local models

    try:
        backend, name = parse_model_spec(llm_model)
    except ValueError:  # a bare model name (an explainer's selection judge) or none
        backend, name = "", llm_model
    return "single" if backend == "vllm" or name in catalog() else "batch"


def yes_probability(pos: TokenLogprob) -> float | None:
    """P(yes) at one generated position: the yes-like and no-like alternatives' mass (the
    chosen token included), renormalised; None when neither is among them."""
    seen: dict[tuple[int | None, str], float] = {(a.token_id, a.token): a.logprob for a in pos.top}
    if pos.logprob is not None and not any(t == pos.token for _, t in seen):
        seen[(pos.token_id, pos.token)] = pos.logprob
    mass = {"0": 0.0, "1": 0.0}
    for (_, token), logprob in seen.items():
        d = answer_digit(token)
        if d is not None:
            mass[d] += math.exp(logprob)
    total = mass["0"] + mass["1"]
    return mass["1"] / total if total > 0 else None


def read_one(response: LLMResponse) -> tuple[list[int] | None, list[float] | None, str | None]:
    """(labels, probabilities or None, error) of a one-window answer, as judge.read_answers:
    the label is the answer's first word (Yes/No, 1/0, true/false), or where that is another
    word, P(yes) >= 0.5 when the answer token's alternatives hold yes or no."""
    if not response.ok:
        return None, None, response.error
    parsed = response.parsed
    if isinstance(parsed, dict) and "labels" in parsed:  # the lexical baseline
        labels, probs = parsed["labels"], parsed.get("probabilities")
        if not isinstance(labels, list) or len(labels) != 1 or labels[0] not in (0, 1):
            return None, None, f"expected one 0/1 answer, got {labels!r}"
        return [int(labels[0])], probs, None
    first = next((p for p in response.logprobs or [] if p.token.strip()), None)
    prob = yes_probability(first) if first is not None else None
    words = response.text.split()
    digit = answer_digit(words[0]) if words else None
    if digit is None and prob is None:
        return None, None, f"answer {response.text[:40]!r} is not Yes or No"
    label = int(digit) if digit is not None else int(prob >= 0.5)  # type: ignore[operator]
    return [label], None if prob is None else [prob], None


def request(
    user: str,
    explanation: str,
    example: str,
    task: dict[str, Any],
    logprobs: bool,
    tags: dict[str, str | int],
    **fields: str,
) -> LLMRequest:
    """The chat request of one window: the shared instructions, then ``user`` rendered with
    the window (``example``) and ``fields`` first and the explanation in the closing question
    (what rescoring another explanation on the same window shares is its prefix)."""
    return LLMRequest.model_construct(
        prompt=None,
        prompt_logprobs=None,
        messages=[
            ChatMessage.model_construct(role="system", content=prompts.text(SYSTEM)),
            ChatMessage.model_construct(
                role="user",
                content=prompts.render(user, explanation=explanation, example=example, **fields),
            ),
        ],
        sampling=SamplingParams.model_construct(temperature=0.0, max_tokens=MAX_TOKENS),
        json_schema=None,
        logprobs=TOP_LOGPROBS if logprobs else None,
        task=task,
        tags=tags,
        check=lambda r: read_one(r)[2],
    )
