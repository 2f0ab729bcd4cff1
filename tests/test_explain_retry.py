"""Explanations from a model that rambles or copies: a cut answer is asked again once with a
firmer instruction; a copy of a few-shot answer is an error, not an explanation."""

from __future__ import annotations

import asyncio

from autointerp import prompts
from autointerp.explainers.parse import ask_explanation
from autointerp.llm.base import Backend
from autointerp.llm.client import LLMClient
from autointerp.llm.config import LLMConfig
from autointerp.llm.types import ChatMessage, LLMRequest, LLMResponse


class Scripted(Backend):
    """Answers from a list, in order; records what it was sent."""

    name, model, cacheable = "scripted", "scripted", False

    def __init__(self, answers: list[tuple[str, str]]) -> None:
        self.answers = answers
        self.sent: list[LLMRequest] = []

    async def complete(self, request: LLMRequest) -> LLMResponse:
        text, finish = self.answers[len(self.sent)]
        self.sent.append(request)
        return LLMResponse(text=text, finish_reason=finish, completion_tokens=len(text.split()))


def _ask(answers: list[tuple[str, str]]) -> tuple[str | None, str | None, LLMResponse, Scripted]:
    backend = Scripted(answers)
    client = LLMClient(backend, LLMConfig())
    request = LLMRequest(
        messages=[
            ChatMessage(role="system", content="explain"),
            *prompts.fewshot("explain_fewshot"),
            ChatMessage(role="user", content="Active in: ..."),
        ],
        json_schema={"type": "object", "required": ["explanation"]},
    )
    text, error, response = asyncio.run(ask_explanation(request, client))
    return text, error, response, backend


def test_a_cut_answer_is_asked_again_with_a_firmer_instruction() -> None:
    cut = '{"explanation": "the keyword def which is used to define a function that is used'
    text, error, response, backend = _ask(
        [(cut, "length"), ('{"explanation": "the keyword \\"def\\""}', "stop")]
    )
    assert (text, error) == ('the keyword "def"', None)
    assert response.finish_reason == "stop" and len(backend.sent) == 2
    turns = backend.sent[1].messages
    assert turns[-2] == ChatMessage(role="assistant", content=cut)
    assert turns[-1] == ChatMessage(role="user", content=prompts.text("explain_firmer"))
    assert turns[:-2] == backend.sent[0].messages


def test_a_second_cut_answer_is_an_error_saying_so() -> None:
    cut = '{"explanation": "words words words'
    text, error, response, backend = _ask([(cut, "length"), (cut, "length")])
    assert text is None and "cut at the completion budget" in error
    assert len(backend.sent) == 2 and response.finish_reason == "length"


def test_a_finished_answer_is_sent_once_and_a_copied_example_is_an_error() -> None:
    text, error, _, backend = _ask([('{"explanation": "comment lines"}', "stop")])
    assert (text, error, len(backend.sent)) == ("comment lines", None, 1)
    copy = '{"explanation": "The name \\"items\\" used as a collection variable"}'
    text, error, _, backend = _ask([(copy, "stop")])
    assert text is None and error == "the answer repeats a few-shot example's explanation"
    assert len(backend.sent) == 1


def _ask_with(user: str, answer: str) -> tuple[str | None, str | None]:
    client = LLMClient(Scripted([(answer, "stop")]), LLMConfig())
    request = LLMRequest(
        messages=[
            ChatMessage(role="system", content="explain"),
            *prompts.fewshot("explain_fewshot"),
            ChatMessage(role="user", content=user),
        ],
        json_schema={"type": "object", "required": ["explanation"]},
    )
    text, error, _ = asyncio.run(ask_explanation(request, client))
    return text, error


def test_an_example_answer_that_fits_the_marked_tokens_is_kept() -> None:
    # Qwen2.5-Coder-1.5B-Instruct's answer (verbatim) for demo latent 1, which fires on "<"
    # and "<=": the words of a few-shot example, and right for this latent
    qwen = '{"explanation":"The comparison operators \\"<\\" and \\"<=\\""}'
    marked = "Active in:\n\n1.\n    if n<< <>> 0:\n\n2.\n    while lo<< <=>> hi:"
    assert _ask_with(marked, qwen) == ('The comparison operators "<" and "<="', None)
    # the same answer for a latent whose examples mark other tokens is still a copy
    other = "Active in:\n\n1.\n    x<< +=>> 1\n\n2.\n    y<< +=>> 2"
    assert _ask_with(other, qwen) == (None, "the answer repeats a few-shot example's explanation")
    # "<" shown as ‹ where it touches a marker is the same token
    touching = "Active in:\n\n1.\n    if n<<‹>> 0:"
    assert _ask_with(touching, qwen)[1] is None
