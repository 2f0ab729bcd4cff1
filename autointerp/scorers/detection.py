"""Detection: does the judge, given the explanation, tell activating windows from contrast
windows? Windows are shown plain (no highlighting), activating and contrast mixed."""

from __future__ import annotations

from typing import Any

from autointerp.runner.examples import LatentExamples
from autointerp.scorers.base import shown_columns
from autointerp.scorers.judge import BinaryJudgeScorer, Item, window_meta


class DetectionScorer(BinaryJudgeScorer):
    name = "detection"
    task_kind = "detect"

    def items(self, ex: LatentExamples, split: str) -> list[Item]:
        out = []
        for r in ex.windows(split):
            strings = r["strings"]
            out.append(
                Item(
                    text="".join(strings),
                    tokens=strings,
                    truth=r["kind"] == "activating",
                    meta={**window_meta(r, split), **shown_columns(r, ex.vocab)},
                )
            )
        return out

    def task_example(self, item: Item) -> Any:
        return item.tokens
