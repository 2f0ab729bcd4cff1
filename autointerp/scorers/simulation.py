"""Simulation: the judge predicts every token's activation (0..10) from the explanation; the
score is the Pearson correlation with the true activations over all tokens of the latent's
windows (contrast windows included), and per quantile bin (that bin's windows with the
contrast windows). Pearson is invariant to the per-latent scale, so raw activations serve.

Two ways to ask:
- ``logprobs``: one completion prompt lists the tokens one per line, each followed by a tab
  and a placeholder; the prompt logprobs at each placeholder give the judge's distribution
  over the digits 0..9 there, and the prediction is its expected value. The scale stops at 9
  so every value is ONE token whatever the tokenizer (Qwen's splits "10" into "1", "0": on a
  0..10 scale its "1" would mix 1 and 10); Pearson does not care about the scale. All tokens of all
  windows of the prompt in ONE forward pass (in-process vLLM, or a vLLM server's completions
  API with ``prompt_logprobs``).
- ``json``: the judge writes ``{"activations": [[...], ...]}``; lists are validated (a window
  whose list has the wrong length is lost, never filled with zeros).
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import polars as pl

from autointerp import prompts
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse, SamplingParams, TokenLogprob
from autointerp.runner.examples import LatentExamples
from autointerp.scorers.base import (
    KEY_SCHEMA,
    WINDOW_SCHEMA,
    Scorer,
    ScoreResult,
    Tally,
    collected,
    seeded_rng,
    window_columns,
)
from autointerp.scorers.judge import batches, greedy, system_message
from autointerp.scorers.metrics_pearson import pearson_metrics
from autointerp.text import excerpts, json_strings

# The value written at every placeholder: a digit, so the judge's own token there is a value
# of the scale and is always among the returned alternatives. With the word "unknown" there,
# Qwen2.5-Coder-1.5B copied it from line to line: after a few lines no digit was left among
# the top 20 alternatives, and 20 of 22 prompts of the real demo were lost.
PLACEHOLDER = "0"
JSON_SCHEMA = {
    "type": "object",
    "properties": {
        "activations": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
    },
    "required": ["activations"],
}


def _exact_lists(n: int) -> dict[str, Any]:
    """JSON_SCHEMA with exactly ``n`` lists (one per window): SmolLM2 otherwise answered with an
    empty list of lists."""
    lists = {**JSON_SCHEMA["properties"]["activations"], "minItems": n, "maxItems": n}
    return {**JSON_SCHEMA, "properties": {"activations": lists}}


def _line_token(tok: str) -> str:
    """A token on one line: tabs and newlines escaped (the line ends in a tab and the value)."""
    return tok.replace("\t", "\\t").replace("\n", "\\n") or " "


def logprob_prompt(explanation: str, windows: list[list[str]]) -> tuple[str, list[list[int]]]:
    """The completion prompt and, per window, the character offset of each token's
    placeholder in it."""
    head = prompts.render("simulation_logprobs", explanation=explanation, lines="")
    text, offsets = head, []
    for w, strings in enumerate(windows):
        if w:
            text += "\n"
        spots = []
        for tok in strings:
            text += _line_token(tok) + "\t"
            spots.append(len(text))
            text += PLACEHOLDER + "\n"
        offsets.append(spots)
    return text, offsets


def token_starts(prompt: str, positions: list[TokenLogprob]) -> list[int]:
    """Start offset of each prompt token in ``prompt``, found in order (tolerates tokens
    shown without their whitespace); -1 where a token cannot be placed."""
    starts, cursor = [], 0
    for pos in positions:
        tok = pos.token
        if not tok:
            starts.append(-1)
            continue
        at = prompt.find(tok, cursor)
        if at < 0:
            starts.append(-1)
            continue
        starts.append(at)
        cursor = at + len(tok)
    return starts


ASCII_DIGITS = "0123456789"


def expected_digit(pos: TokenLogprob) -> float | None:
    """Expected value over the single-digit tokens 0..9 (whitespace around them allowed) among
    the top alternatives, renormalised. Multi-digit tokens ("10" in some vocabularies) are not
    values of the scale, so they count for nothing; nor do other scripts' digits (Qwen ranked
    the subscript "₀", which ``str.isdigit`` accepts and ``int`` refuses)."""
    mass = total = 0.0
    for alt in pos.top:
        core = alt.token.strip()
        if len(core) == 1 and core in ASCII_DIGITS:
            p = math.exp(alt.logprob)
            mass += p * int(core)
            total += p
    return mass / total if total > 0 else None


def read_logprob_predictions(
    response: LLMResponse, prompt: str, offsets: list[list[int]]
) -> list[tuple[list[float] | None, str | None]]:
    if not response.ok:
        return [(None, response.error)] * len(offsets)
    if not response.prompt_logprobs:
        return [(None, "backend returned no prompt logprobs")] * len(offsets)
    starts = token_starts(prompt, response.prompt_logprobs)
    index = {s: i for i, s in enumerate(starts) if s >= 0}
    out: list[tuple[list[float] | None, str | None]] = []
    for spots in offsets:
        preds = []
        for s in spots:
            i = index.get(s)
            if (
                i is None
                and s - 1 in index
                and response.prompt_logprobs[index[s - 1]].token[:1].isspace()
            ):  # a tokenizer that merges the tab into the placeholder token
                i = index[s - 1]
            value = expected_digit(response.prompt_logprobs[i]) if i is not None else None
            if value is None:
                break
            preds.append(value)
        if len(preds) == len(spots):
            out.append((preds, None))
        else:
            out.append((None, "no digit distribution at a token's placeholder"))
    return out


def _json_lists(
    response: LLMResponse, lengths: list[int]
) -> list[tuple[list[Any] | None, str | None]]:
    """Per window, the answer's list of values as parsed (checked: the right length, numbers
    only) or why it is unusable."""
    if not response.ok:
        return [(None, response.error)] * len(lengths)
    parsed = response.parsed
    acts = parsed.get("activations") if isinstance(parsed, dict) else None
    if not isinstance(acts, list) or len(acts) != len(lengths):
        got = len(acts) if isinstance(acts, list) else type(acts).__name__
        return [(None, f"expected {len(lengths)} activation lists, got {got}")] * len(lengths)
    out: list[tuple[list[Any] | None, str | None]] = []
    for values, n in zip(acts, lengths, strict=True):
        if not isinstance(values, list) or len(values) != n:
            got = len(values) if isinstance(values, list) else type(values).__name__
            out.append((None, f"expected {n} numbers, got {got}"))
        elif not _numbers(values):
            out.append((None, "non-numeric activation in the answer"))
        else:
            out.append((values, None))
    return out


def read_json_predictions(
    response: LLMResponse, lengths: list[int]
) -> list[tuple[list[float] | None, str | None]]:
    """Per window, the predicted activations clipped to 0..10 (NaN read as 0), or why the
    window's answer is unusable."""
    out: list[tuple[list[float] | None, str | None]] = []
    for values, err in _json_lists(response, lengths):
        if values is None:
            out.append((None, err))
            continue
        v = np.minimum(10.0, np.maximum(0.0, np.array(values, dtype=np.float64)))
        out.append((np.where(np.isnan(v), 0.0, v).tolist(), None))
    return out


def _numbers(values: list[Any]) -> bool:
    """Every value an int or a float (a bool is not a number here)."""
    if set(map(type, values)) <= {int, float}:  # what a parsed JSON answer holds
        return True
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _first_error(got: list[tuple[Any, str | None]]) -> str | None:
    """The JSON simulate task's check: the first window whose predictions are unusable."""
    return next((err for _, err in got if err is not None), None)


def _all_failed(got: list[tuple[list[float] | None, str | None]]) -> str | None:
    """The prompt-logprobs task's check: unusable only when no window has a prediction. The
    logprobs of a prompt are the same every time it is asked, so a window whose placeholder
    a tokenizer merged away is lost (counted), not a reason to ask again."""
    if any(err is None for _, err in got):
        return None
    return _first_error(got)


NO_BIN = 99  # activating windows drawn by top-k / uniform samplers: pearson_q99


def _group(row: dict[str, Any]) -> int:
    """-1 for contrast windows, the quantile bin for quantile samples, else NO_BIN."""
    if row["kind"] != "activating":
        return -1
    return NO_BIN if row["quantile"] is None else int(row["quantile"])


class SimulationScorer(Scorer):
    name = "simulation"
    example_schema = {
        **KEY_SCHEMA,
        **WINDOW_SCHEMA,
        "truth": pl.List(pl.Float32()),
        "prediction": pl.List(pl.Float32()),
        "error": pl.String(),
    }

    def mode(self) -> str:
        mode = self.config.simulation.mode
        if mode == "auto":
            return "logprobs" if self.ctx.backend == "vllm" else "json"
        return mode

    def empty_metrics(self) -> dict[str, float]:
        return {k: float("nan") for k in pearson_metrics([], [])}

    def settings(self) -> dict[str, Any]:
        return {**super().settings(), "resolved_mode": self.mode()}

    def _request(self, explanation: str, chunk: list[list[str]], tags: dict[str, Any]):
        cfg = self.config.simulation
        if self.mode() == "logprobs":
            prompt, offsets = logprob_prompt(explanation, chunk)
            req = LLMRequest(
                prompt=prompt,
                sampling=SamplingParams(temperature=0.0, max_tokens=1),
                prompt_logprobs=cfg.top_logprobs,
                tags=tags,
                check=lambda r: _all_failed(read_logprob_predictions(r, prompt, offsets)),
            )
            return req, (prompt, offsets)
        shown = excerpts([json_strings(t) for t in chunk])
        # built with model_construct (as the judge scorers' requests): every field is ours
        # and valid, and validation cost more than the rest of the request
        req = LLMRequest.model_construct(
            prompt=None,
            logprobs=None,
            prompt_logprobs=None,
            messages=[
                system_message("simulation_system"),
                ChatMessage.model_construct(
                    role="user",
                    content=prompts.render(
                        "simulation_user", explanation=explanation, examples=shown
                    ),
                ),
            ],
            sampling=greedy(cfg.max_tokens),
            json_schema=_exact_lists(len(chunk)),
            task={"kind": "simulate", "explanation": explanation, "examples": chunk},
            tags=tags,
            # the check validates only; the values are read (clipped) once, in score
            check=lambda r: _first_error(_json_lists(r, [len(t) for t in chunk])),
        )
        return req, None

    async def score(
        self, ex: LatentExamples, explanation: str, llm: LLMClient, split: str = "test"
    ) -> ScoreResult:
        rows = ex.windows(split)
        if not rows:
            return ScoreResult(status="skipped", error=f"no {split} windows")
        strings = [r["strings"] for r in rows]
        rng = seeded_rng(self.ctx.seed, ex.hookpoint, ex.latent, self.name, split)
        chunks = batches(len(rows), self.config.simulation.examples_per_prompt, rng)
        tags = {"stage": f"score:{self.name}", "latent": f"{ex.hookpoint}:{ex.latent}"}
        built = [self._request(explanation, [strings[i] for i in c], tags) for c in chunks]
        responses = await asyncio.gather(*(llm.generate(req) for req, _ in built))
        tally = Tally()
        preds: list[list[float] | None] = [None] * len(rows)
        errors: list[str | None] = [None] * len(rows)
        for chunk, (_, extra), resp in zip(chunks, built, responses, strict=True):
            tally.add(resp)
            if extra is not None:
                got = read_logprob_predictions(resp, *extra)
            else:
                got = read_json_predictions(resp, [len(strings[i]) for i in chunk])
            for i, (p, err) in zip(chunk, got, strict=True):
                preds[i], errors[i] = p, err
        return self._result(rows, preds, errors, tally, split)

    def _result(self, rows, preds, errors, tally, split) -> ScoreResult:
        ok = [i for i, p in enumerate(preds) if p is not None]
        truth = [np.asarray(rows[i]["activations"], dtype=np.float64) for i in ok]
        pred = [np.asarray(preds[i], dtype=np.float64) for i in ok]
        groups = np.array([_group(rows[i]) for i in ok], dtype=np.int64)
        metrics = (  # no usable answer: a failed row saying why (below), not a crash
            pearson_metrics(truth, pred, groups, n_boot=self.config.n_boot, seed=self.ctx.seed)
            if ok
            else {}
        )
        examples = [
            {
                **window_columns(r, split),
                "truth": r["activations"],  # stored as Float32, as read
                "prediction": preds[i],
                "error": errors[i],
            }
            for i, r in enumerate(rows)
        ]
        result = collected(self.name, metrics, examples, len(ok), len(rows), tally, errors)
        if result.status == "ok" and np.isnan(metrics["pearson"]):
            result.status = "skipped"  # a constant truth: no correlation is defined
            result.error = "the true activations of the answered windows are constant"
        return result
