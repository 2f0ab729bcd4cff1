"""Real models wrap their JSON: code fences, prose before and after, a reasoning block."""

from __future__ import annotations

import pytest

from autointerp.llm.base import parse_json

SCHEMA = {"type": "object", "properties": {"answers": {}}, "required": ["answers"]}


@pytest.mark.parametrize(
    "text",
    [
        '{"answers": [1, 0]}',
        '```json\n{"answers": [1, 0]}\n```',
        'Sure! Here is my answer:\n{"answers": [1, 0]}\nI hope this helps.',
        '<think>maybe {"answers": [0, 0]} ... no, the second one is off</think>{"answers": [1, 0]}',
        'First {"note": "not it"} then {"answers": [1, 0]} then [3, 4]',
    ],
    ids=["plain", "fence", "prose", "reasoning", "several"],
)
def test_the_json_that_fits_the_schema_is_found(text: str) -> None:
    assert parse_json(text, SCHEMA) == {"answers": [1, 0]}


def test_the_last_fitting_answer_wins_and_misfits_raise() -> None:
    assert parse_json('{"answers": [0]} corrected: {"answers": [1]}', SCHEMA) == {"answers": [1]}
    with pytest.raises(ValueError, match="no JSON value that fits"):
        parse_json('I think the answer is {"answer": 1', SCHEMA)
    with pytest.raises(ValueError, match="lacks required keys"):
        parse_json('{"answer": 1}', SCHEMA)  # whole-text JSON is checked as it is
    assert parse_json("text [1, 2] and [3]", {"type": "array"}) == [3]
