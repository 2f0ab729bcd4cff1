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

_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')
SPAN = re.compile(r"<<(?!<)(.+?)>>(?!>)", re.DOTALL)
_EXCERPT = re.compile(
    r"^(\d+)\.\n(.*?)(?=\n\n\d+\.\n|\n\nDescription: |\Z)", re.DOTALL | re.MULTILINE
)
_DESCRIPTION = re.compile(r"^Description: (.*)$", re.MULTILINE)


def keys(explanation: str) -> set[str]:
    return {json.loads(f'"{m}"').strip() for m in _QUOTED.findall(explanation)} - {""}


def default_explain(user: str) -> str:
    spans = Counter(s.strip() for s in SPAN.findall(user) if s.strip())
    top = spans.most_common(1)[0][0] if spans else "nothing"
    return f'the token "{top}"'


def default_detect(explanation: str, text: str) -> bool:
    return any(k in text for k in keys(explanation))


def default_fuzz(explanation: str, marked: list[str], shown: str) -> bool:
    ks = keys(explanation)
    return bool(marked) and all(m.strip() in ks for m in marked)


def default_simulate(explanation: str, tokens: list[str]) -> list[int]:
    ks = keys(explanation)
    return [10 if t.strip() in ks else 0 for t in tokens]


@dataclass
class ScriptedJudge:
    """Callable as a FakeServer responder; records what it was asked."""

    explain: Callable[[str], str] = default_explain
    detect: Callable[[str, str], bool] = default_detect
    fuzz: Callable[[str, list[str], str], bool] = default_fuzz
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
        examples = [m.group(2) for m in _EXCERPT.finditer(user)]
        if "are exactly what the feature" in system:
            self._seen("fuzzing", user)
            answers = [int(self.fuzz(explanation, SPAN.findall(ex), ex)) for ex in examples]
            return json.dumps({"answers": answers})
        if "would fire somewhere in it" in system:
            self._seen("detection", user)
            return json.dumps({"answers": [int(self.detect(explanation, ex)) for ex in examples]})
        if "predict, from its description" in system:
            self._seen("simulation", user)
            acts = [self.simulate(explanation, json.loads(ex)) for ex in examples]
            return json.dumps({"activations": acts})
        return "I do not understand."
