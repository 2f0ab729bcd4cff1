"""Turn an explainer's answer into an explanation, or an error that keeps the raw text.

Structured output (``{"explanation": ...}``) is used when the backend honoured the schema.
Otherwise a tolerant parser takes the LAST explanation in the text: a JSON object with an
``explanation`` key, or else a line ``Explanation: ...``. The last, never the first: the
answer may quote the examples or its own reasoning, and either can contain the marker.
"""

from __future__ import annotations

import json
import re
from typing import Any

from autointerp import prompts
from autointerp.llm.client import LLMClient
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse
from autointerp.text import ESCAPED_GT, ESCAPED_LT, highlighted_spans

MAX_CHARS = 1000
_LINE = re.compile(
    r"^[\s*#>_-]*explanation[\s*_]*[:：][\s*_]*(.+?)\s*$", re.IGNORECASE | re.MULTILINE
)
_DECODER = json.JSONDecoder()


def _from_parsed(parsed: Any) -> str | None:
    if isinstance(parsed, dict):
        value = parsed.get("explanation")
        if isinstance(value, str):
            return value
    return None


def _candidates(text: str) -> list[tuple[int, str]]:
    """(position, explanation) of every JSON object with an explanation and every marked
    line in ``text``."""
    found = []
    for i, ch in enumerate(text):
        if ch != "{":
            continue
        try:
            value, _ = _DECODER.raw_decode(text, i)
        except json.JSONDecodeError:
            continue
        candidate = _from_parsed(value)
        if candidate is not None and candidate.strip():
            found.append((i, candidate))
    for m in _LINE.finditer(text):
        value = m.group(1).strip().strip('"').strip()
        if value and not value.startswith("{"):
            found.append((m.start(), value))
    return found


def _last_explanation(text: str) -> str | None:
    found = _candidates(text)
    return max(found)[1] if found else None


def check_explanation(response: LLMResponse) -> str | None:
    """The explain task's check of an answer (``LLMRequest.check``): why it holds no usable
    explanation (none found, empty, too long), or None."""
    return parse_explanation(response)[1]


def parse_explanation(response: LLMResponse) -> tuple[str | None, str | None]:
    """``(explanation, None)`` or ``(None, error)``. Transport failures stay errors; an
    answer that fails the schema is searched with the tolerant parser."""
    if response.error and not response.error.startswith("unparseable JSON"):
        return None, response.error
    value = _from_parsed(response.parsed)
    if value is None:
        text = response.text or ""
        value = _last_explanation(text)
    if value is None:
        if response.finish_reason == "length":
            return None, "answer cut at the completion budget before an explanation ended"
        return None, "no explanation found in the answer (raw text kept)"
    value = " ".join(value.split())
    if not value:
        return None, "empty explanation"
    if len(value) > MAX_CHARS:
        return None, f"explanation of {len(value)} characters (> {MAX_CHARS}): not a summary"
    return value, None


async def ask_explanation(
    request: LLMRequest, llm: LLMClient
) -> tuple[str | None, str | None, LLMResponse]:
    """Send ``request``; an answer cut at the completion budget without a usable explanation
    (a model rambling inside the JSON string) is answered once more, with the cut answer and
    a firmer instruction as the next turns. Returns (explanation, error, the answer used)."""
    response = await llm.generate(request)
    text, error = _not_copied(*parse_explanation(response), request)
    if text is not None or response.finish_reason != "length" or not request.messages:
        return text, error, response
    retry = request.model_copy(
        update={
            "messages": [
                *request.messages,
                ChatMessage(role="assistant", content=response.text),
                ChatMessage(role="user", content=prompts.text("explain_firmer")),
            ]
        }
    )
    second = await llm.generate(retry)
    text, error = _not_copied(*parse_explanation(second), request)
    return text, error, second


def _not_copied(
    text: str | None, error: str | None, request: LLMRequest
) -> tuple[str | None, str | None]:
    """An error instead of an explanation that repeats a few-shot example's answer (the
    assistant turns of the request): a small model given examples may copy one verbatim."""
    if text is None:
        return text, error
    shown = {
        " ".join(v.split()).lower()
        for m in request.messages or []
        if m.role == "assistant"
        for v in [_last_explanation(m.content)]
        if v
    }
    if text.lower() in shown and not _fits_marked(text, request):
        return None, "the answer repeats a few-shot example's explanation"
    return text, None


_QUOTED = re.compile(r"\"([^\"]+)\"|'([^']+)'")


def _fits_marked(text: str, request: LLMRequest) -> bool:
    """Whether an answer that repeats a few-shot example names tokens this latent's own
    examples mark (``<<...>>`` in the last user turn): then it describes the latent, not a
    copy. Qwen2.5-Coder answered 'The comparison operators "<" and "<="' (the words of an
    example) for a demo latent that fires on ``<`` and ``<=``. An answer that quotes nothing
    cannot be checked, and stays a copy."""
    users = [m.content for m in request.messages or [] if m.role == "user"]
    if not users:
        return False
    plain, spans = highlighted_spans(users[-1])
    marked = {
        part.replace(ESCAPED_LT, "<").replace(ESCAPED_GT, ">")
        for a, b in spans
        for part in plain[a:b].split()
    }
    quoted = {a or b for a, b in _QUOTED.findall(text)}
    return bool(quoted & marked)
