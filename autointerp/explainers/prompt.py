"""The explain prompt: shared instructions and few-shot turns first, the latent's windows last."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from autointerp import prompts
from autointerp.explainers.base import JSON_SCHEMA, JSON_SCHEMA_REASONING
from autointerp.explainers.config import ExplainConfig
from autointerp.explainers.parse import check_explanation
from autointerp.llm.types import ChatMessage, LLMRequest, SamplingParams
from autointerp.runner.examples import LatentExamples, highlight_mask
from autointerp.text import excerpts, highlight

CONTRAST_ORDER = ("similar", "neighbour", "random")


def activating_windows(ex: LatentExamples, n: int) -> list[dict[str, Any]]:
    """The ``n`` strongest train activating windows (top-k first, then quantile samples)."""
    rows = ex.windows("train", "activating")
    return sorted(rows, key=lambda r: (-r["max_activation"], r["seq_id"]))[:n]


def contrast_windows(
    ex: LatentExamples, n: int, kinds: tuple[str, ...] = CONTRAST_ORDER
) -> list[dict[str, Any]]:
    """Up to ``n`` train contrast windows of ``kinds``, look-alikes ('similar', 'neighbour')
    first."""
    order = {k: i for i, k in enumerate(CONTRAST_ORDER)}
    rows = ex.windows("train", list(kinds))
    return sorted(rows, key=lambda r: (order.get(r["kind"], 9), r["rank"]))[:n]


def around_peak(r: dict[str, Any], before: int | None, after: int | None) -> dict[str, Any]:
    """The window cut to ``before`` tokens before its peak (first max) and ``after`` after
    it (None: no cut on that side): its tokens, strings and activations."""
    if before is None and after is None:
        return r
    peak = int(np.argmax(np.asarray(r["activations"])))
    a = 0 if before is None else max(0, peak - before)
    b = len(r["strings"]) if after is None else peak + after + 1
    cut = {k: r[k][a:b] for k in ("tokens", "strings", "activations", "activations_norm")}
    return {**r, **cut}


def _numbered(lines: list[str]) -> str:
    return "\n".join(f"{i}. {line}" for i, line in enumerate(lines, 1))


def _blocks(texts: list[str]) -> str:
    return excerpts(texts)


def _values_line(tokens: list[str], norm: np.ndarray, mask: np.ndarray) -> str:
    pairs = [
        f"{json.dumps(t, ensure_ascii=False)} {int(v)}"
        for t, v, m in zip(tokens, norm, mask, strict=True)
        if m
    ]
    return ", ".join(pairs)


def explain_request(
    ex: LatentExamples,
    config: ExplainConfig,
    contrastive: bool,
    *,
    contrast_kinds: tuple[str, ...] = ("similar", "neighbour"),
    temperature: float | None = None,
    seed: int | None = None,
    candidate: int = 0,
) -> LLMRequest:
    act = [
        around_peak(r, config.context_before, config.context_after)
        for r in activating_windows(ex, config.n_examples)
    ]
    shown, values, task_examples = [], [], []
    for r in act:
        acts = r["activations"]
        strings = r["strings"]
        level = np.asarray(r["activations_norm"])
        mask = highlight_mask(level, config.highlight_threshold)
        shown.append(highlight(strings, mask))
        values.append(_values_line(strings, level, mask))
        task_examples.append({"tokens": strings, "activations": acts.tolist()})
    contrast_text, task_contrast = "", []
    if contrastive and config.n_contrast:
        con = contrast_windows(ex, config.n_contrast, contrast_kinds)
        task_contrast = [r["strings"] for r in con]
        lines = ["".join(t) for t in task_contrast]
        if lines:
            contrast_text = "\n\nSilent in:\n\n" + _blocks(lines)
    values_text = (
        "\n\nLevels (0-10) of the marked tokens:\n" + _numbered(values)
        if config.show_activations
        else ""
    )
    system = prompts.text("explain_contrastive_system" if contrastive else "explain_system")
    answer = prompts.text("explain_answer_reasoning" if config.reasoning else "explain_answer")
    messages = [ChatMessage(role="system", content=f"{system}\n{answer}")]
    messages += prompts.fewshot("explain_fewshot")
    messages.append(
        ChatMessage(
            role="user",
            content=prompts.render(
                "explain_user",
                examples=_blocks(shown),
                contrast=contrast_text,
                values=values_text,
            ),
        )
    )
    task: dict[str, Any] = {
        "kind": "explain",
        "examples": task_examples,
        "top_k": config.top_tokens,
    }
    if task_contrast:
        task["contrast"] = task_contrast
    max_tokens = config.max_tokens * (4 if config.reasoning else 1)
    return LLMRequest(
        messages=messages,
        sampling=SamplingParams(
            temperature=config.temperature if temperature is None else temperature,
            max_tokens=max_tokens,
            seed=seed,
        ),
        json_schema=JSON_SCHEMA_REASONING if config.reasoning else JSON_SCHEMA,
        task=task,
        check=check_explanation,
        tags={"stage": "explain", "latent": f"{ex.hookpoint}:{ex.latent}", "candidate": candidate},
    )
