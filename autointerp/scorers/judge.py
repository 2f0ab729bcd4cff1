"""What detection and fuzzing share: windows shown in numbered batches to a judge that
answers 0/1 per window, with P(1) from logprobs where the backend gives them."""

from __future__ import annotations

import asyncio
import math
from abc import abstractmethod
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

import numpy as np
import polars as pl

from autointerp import prompts
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse, SamplingParams, TokenLogprob
from autointerp.runner.examples import LatentExamples
from autointerp.scorers import judge_single
from autointerp.scorers.base import (
    KEY_SCHEMA,
    SHOWN_SCHEMA,
    WINDOW_SCHEMA,
    Scorer,
    ScoreResult,
    Tally,
    collected,
    seeded_rng,
    window_columns,
)
from autointerp.scorers.judge_single import answer_digit
from autointerp.scorers.metrics import binary_metrics
from autointerp.text import excerpts, marks

EXAMPLE_SCHEMA: dict[str, pl.DataType] = {
    **KEY_SCHEMA,
    **WINDOW_SCHEMA,
    "variant": pl.String(),
    "prompt": pl.Int32(),
    "position": pl.Int32(),
    "truth": pl.Boolean(),
    "prediction": pl.Boolean(),
    "probability": pl.Float64(),
    "error": pl.String(),
    **SHOWN_SCHEMA,
}
ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"answers": {"type": "array", "items": {"type": "integer", "enum": [0, 1]}}},
    "required": ["answers"],
}


def answer_schema(n: int) -> dict[str, Any]:
    """ANSWER_SCHEMA with exactly ``n`` answers: a structured-output engine then ends the list
    after the n-th (SmolLM2 otherwise kept appending 0s and 1s until max_tokens)."""
    answers = {**ANSWER_SCHEMA["properties"]["answers"], "minItems": n, "maxItems": n}
    return {**ANSWER_SCHEMA, "properties": {"answers": answers}}


@dataclass
class Item:
    """One window as the judge sees it, and the truth the judge should find."""

    text: str  # the window's text, shown plain (fuzzing lists its marks apart: text.marks)
    tokens: list[str]
    truth: bool
    meta: dict[str, Any]  # split, kind, sampler, quantile, seq_id, start, variant, shown_*
    highlighted: list[int] | None = None  # fuzzing: the marked tokens (0/1 per token)


def batches(n_items: int, per_prompt: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded shuffle of the items cut into prompts of near-equal size <= ``per_prompt``."""
    order = rng.permutation(n_items)
    n_prompts = max(1, math.ceil(n_items / per_prompt))
    return [b for b in np.array_split(order, n_prompts) if len(b)]


def probabilities_from_logprobs(logprobs: list[TokenLogprob] | None, n: int) -> list[float] | None:
    """P(1) at each generated 0/1 answer token, from the top alternatives there (the two
    renormalised). None when the answer tokens cannot be found one per window."""
    if not logprobs:
        return None
    spots = [lp for lp in logprobs if answer_digit(lp.token) is not None]
    if len(spots) != n:
        return None
    out = []
    for lp in spots:
        mass = {"0": 0.0, "1": 0.0}
        for alt in lp.top:
            d = answer_digit(alt.token)
            if d is not None:
                mass[d] += math.exp(alt.logprob)
        total = mass["0"] + mass["1"]
        out.append(mass["1"] / total if total > 0 else float(answer_digit(lp.token) == "1"))
    return out


def read_answers(
    response: LLMResponse, n: int
) -> tuple[list[int] | None, list[float] | None, str | None]:
    """(labels, probabilities or None, error) for a prompt of ``n`` windows."""
    if not response.ok:
        return None, None, response.error
    parsed = response.parsed
    if isinstance(parsed, dict) and "labels" in parsed:  # the lexical baseline
        labels, probs = parsed["labels"], parsed.get("probabilities")
    elif isinstance(parsed, dict) and "answers" in parsed:
        labels, probs = parsed["answers"], None
    else:
        return None, None, "answer lacks the 'answers' list"
    if not isinstance(labels, list) or len(labels) != n:
        got = len(labels) if isinstance(labels, list) else type(labels).__name__
        return None, None, f"expected {n} answers, got {got}"
    clean = []
    for v in labels:
        if isinstance(v, bool) or v in (0, 1):
            clean.append(int(v))
        elif isinstance(v, str) and v.strip().lower() in ("0", "1", "yes", "no", "true", "false"):
            clean.append(int(v.strip().lower() in ("1", "yes", "true")))
        else:
            return None, None, f"answer {v!r} is not 0 or 1"
    if probs is None:
        probs = probabilities_from_logprobs(response.logprobs, n)
    return clean, probs, None


def marks_list(items: list[Item]) -> str:
    """Each window's marked tokens, one numbered line per window (fuzzing's ``$marks``)."""
    return "\n".join(
        f"{i}. {marks(it.tokens, it.highlighted or [0] * len(it.tokens))}"
        for i, it in enumerate(items, 1)
    )


@lru_cache(maxsize=64)
def system_message(name: str) -> ChatMessage:
    """The system message of prompt ``name``, built once and shared by every request (no
    one changes a request's messages once built)."""
    return ChatMessage.model_construct(role="system", content=prompts.text(name))


@lru_cache(maxsize=64)
def greedy(max_tokens: int) -> SamplingParams:
    """Temperature-0 sampling with ``max_tokens``, built once and shared (read only)."""
    return SamplingParams.model_construct(temperature=0.0, max_tokens=max_tokens)


def request(
    system: str,
    user: str,
    explanation: str,
    items: list[Item],
    task: dict[str, Any],
    max_tokens: int,
    logprobs: bool,
    tags: dict[str, str | int],
    **fields: str,
) -> LLMRequest:
    """The chat request of one batch of windows: ``system``, then ``user`` rendered with the
    numbered windows, ``fields`` and the explanation (last: the prefix cache's order)."""
    shown = excerpts([it.text for it in items])
    # built with model_construct: every field is ours and valid (validation costs more than
    # the rest of the request at hundreds of requests per second)
    return LLMRequest.model_construct(
        prompt=None,
        prompt_logprobs=None,
        messages=[
            system_message(system),
            ChatMessage.model_construct(
                role="user",
                content=prompts.render(user, explanation=explanation, examples=shown, **fields),
            ),
        ],
        sampling=greedy(max_tokens),
        json_schema=answer_schema(len(items)),
        logprobs=5 if logprobs else None,
        task=task,
        tags=tags,
        check=lambda r, n=len(items): read_answers(r, n)[2],
    )


async def judge(
    name: str,
    items: list[Item],
    explanation: str,
    llm: LLMClient,
    *,
    per_prompt: int,
    rng: np.random.Generator,
    build: Any,  # (chunk: list[Item]) -> LLMRequest
    n_boot: int,
    seed: int,
    read: Any = read_answers,  # (response, n) -> (labels, probabilities, error)
) -> ScoreResult:
    """Send the items in shuffled batches, collect per-window answers, compute metrics."""
    chunks = batches(len(items), per_prompt, rng)
    responses = await asyncio.gather(*(llm.generate(build([items[i] for i in c])) for c in chunks))
    tally = Tally()
    n = len(items)
    pred = np.full(n, -1, dtype=np.int8)
    prob = np.full(n, np.nan)
    error: list[str | None] = [None] * n
    where = np.zeros((n, 2), dtype=np.int32)
    for p, (chunk, resp) in enumerate(zip(chunks, responses, strict=True)):
        tally.add(resp)
        labels, probs, err = read(resp, len(chunk))
        for j, i in enumerate(chunk):
            where[i] = (p, j)
            if err is not None:
                error[i] = err
                continue
            pred[i] = labels[j]
            if probs is not None:
                prob[i] = probs[j]
    rows = []
    for i, it in enumerate(items):
        rows.append(
            {
                **it.meta,
                "prompt": int(where[i, 0]),
                "position": int(where[i, 1]),
                "truth": it.truth,
                "prediction": None if pred[i] < 0 else bool(pred[i]),
                "probability": None if np.isnan(prob[i]) else float(prob[i]),
                "error": error[i],
            }
        )
    ok = pred >= 0
    truth = np.array([it.truth for it in items], dtype=bool)
    have_prob = ok.any() and not np.isnan(prob[ok]).any()
    metrics = binary_metrics(
        truth[ok], pred[ok].astype(bool), prob[ok] if have_prob else None, n_boot=n_boot, seed=seed
    )
    metrics.update(quantile_recall(items, ok, pred))
    result = collected(name, metrics, rows, int(ok.sum()), n, tally, error)
    if result.status == "ok" and metrics["single_class"] == 1.0:
        # an always-yes judge would score 1.0 on an all-positive mix: not scorable
        result.status = "skipped"
        result.error = (
            f"one class in the answered example mix ({int(metrics['n_pos'])} positive, "
            f"{int(metrics['n_neg'])} negative): balanced accuracy and AUROC are undefined"
        )
    return result


def quantile_recall(items: list[Item], ok: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Recall of the activating windows of each quantile bin (``recall_q<bin>``)."""
    hits: dict[int, list[int]] = {}
    for it, good, p in zip(items, ok, pred, strict=True):
        q = it.meta.get("quantile")
        if good and it.truth and q is not None:
            hits.setdefault(int(q), []).append(int(p))
    return {f"recall_q{q}": float(np.mean(v)) for q, v in sorted(hits.items())}


def window_meta(row: dict[str, Any], split: str, variant: str | None = None) -> dict[str, Any]:
    """A window's columns plus how it was shown (fuzzing: correct / wrong / contrast)."""
    return {**window_columns(row, split), "variant": variant}


class BinaryJudgeScorer(Scorer):
    """What detection and fuzzing share: their windows (``items``, in the order of
    ``LatentExamples.windows``) go to a judge in shuffled batches of ``examples_per_prompt``,
    with the system prompt ``judge_system`` and the user prompt ``<name>_user``; the lexical
    baseline gets a ``task_kind`` payload with ``task_example`` per window.

    Detection and fuzzing show a latent's test windows plain, cut into the same batches (the
    shuffle is seeded without the scorer's name) under the same system prompt, so each fuzzing
    prompt starts with the detection prompt of the same windows, token for token, and a prefix
    cache computes those windows once for both; fuzzing's marks follow the windows."""

    example_schema = EXAMPLE_SCHEMA
    task_kind: ClassVar[str]
    system_prompt: ClassVar[str] = "judge_system"

    def prompt_fields(self, chunk: list[Item]) -> dict[str, str]:
        """Values of the user prompt's own placeholders (besides examples, explanation)."""
        return {}

    @abstractmethod
    def items(self, ex: LatentExamples, split: str) -> list[Item]:
        """The windows shown, with their truth."""

    @abstractmethod
    def task_example(self, item: Item) -> Any:
        """One window as the lexical baseline's task payload sees it."""

    def empty_metrics(self) -> dict[str, float]:
        empty = binary_metrics(np.zeros(0, bool), np.zeros(0, bool))
        return {k: float("nan") for k in empty}

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        items = self.items(ex, split)
        if not items:
            return ScoreResult(status="skipped", error=f"no {split} windows")
        cfg = getattr(self.config, self.name)
        tags: dict[str, str | int] = {
            "stage": f"score:{self.name}",
            "latent": f"{ex.hookpoint}:{ex.latent}",
        }

        def build(chunk: list[Item]) -> LLMRequest:
            task = {
                "kind": self.task_kind,
                "explanation": explanation,
                "examples": [self.task_example(it) for it in chunk],
            }
            return request(
                self.system_prompt,
                f"{self.name}_user",
                explanation,
                chunk,
                task,
                cfg.max_tokens,
                cfg.logprobs,
                tags,
                **self.prompt_fields(chunk),
            )

        def build_one(chunk: list[Item]) -> LLMRequest:
            (it,) = chunk
            task = {
                "kind": self.task_kind,
                "explanation": explanation,
                "examples": [self.task_example(it)],
            }
            fields = self.prompt_fields(chunk)
            if "marks" in fields:  # one window: its marks without the list's numbering
                fields["marks"] = marks(it.tokens, it.highlighted or [0] * len(it.tokens))
            return judge_single.request(
                f"{self.name}_single_user", explanation, it.text, task, cfg.logprobs, tags, **fields
            )

        single = self.judge_format() == "single"
        return await judge(
            self.name,
            items,
            explanation,
            llm,
            per_prompt=1 if single else cfg.examples_per_prompt,
            # the same batches for every scorer of this class: shared prompt prefixes
            rng=seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, "judge", split),
            build=build_one if single else build,
            n_boot=self.config.n_boot,
            seed=self.ctx.seed,
            read=(lambda r, n: judge_single.read_one(r)) if single else read_answers,
        )

    def judge_format(self) -> str:
        """'single' (one window per prompt, a Yes/No answer) or 'batch' (numbered windows,
        one JSON list of 0/1): the section's ``format``, ``auto`` resolved for the judge."""
        return judge_single.resolve_format(getattr(self.config, self.name).format, self.model)

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "format": self.judge_format()}
