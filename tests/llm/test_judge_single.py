"""The one-window judge format of detection and fuzzing (scorers/judge_single.py), over the
fake server: which judges get it by default, the exact prompts (instructions and explanation
first, the window after), one request per window, P(yes) from the answer token's top
logprobs, and the metrics computed from those, against a reference computation."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import numpy as np
import pytest
from fake_server import FakeServer
from llm_helpers import fast_config
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from autointerp import prompts
from autointerp.llm.client import create_client
from autointerp.llm.types import LLMResponse, TokenLogprob, TopLogprob
from autointerp.runner.examples import LatentExamples
from autointerp.scorers.base import ScoreContext
from autointerp.scorers.config import ScoreConfig
from autointerp.scorers.detection import DetectionScorer
from autointerp.scorers.fuzzing import FuzzingScorer
from autointerp.scorers.judge_single import read_one, resolve_format, yes_probability
from autointerp.text import Vocab, marks

EXPLANATION = 'the keyword "return"'
# token id -> string; 0 is BOS (special)
STRINGS = ["<s>", "def", " f", "():", "\n", "    return", " x", " =", " 1", " y"]
VOCAB = Vocab(STRINGS, special=[0])
# (token ids, activations, kind): the judge below says yes to every window holding "return"
WINDOWS = [
    ([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 2.0, 0], "activating"),
    ([6, 7, 8, 4, 5, 9], [0, 0, 0, 0, 1.0, 0], "activating"),
    ([6, 7, 9, 7, 8, 4], [0, 0, 0, 1.0, 0, 0], "activating"),  # fires on " =": judge misses
    ([9, 7, 6, 4, 1, 2], [0] * 6, "random"),
    ([6, 7, 5, 9, 4, 8], [0] * 6, "random"),  # holds "return": a false yes
    ([1, 2, 3, 4, 6, 8], [0] * 6, "similar"),
]
P_YES, P_NO = 0.7 / (0.7 + 0.2), 0.3 / (0.3 + 0.6)  # the scripted alternatives, renormalised


def examples() -> LatentExamples:
    records = []
    for i, (ids, acts, kind) in enumerate(WINDOWS):
        a = np.asarray(acts, dtype=np.float32)
        records.append(
            {
                "split": "test",
                "kind": kind,
                "sampler": "quantile" if kind == "activating" else kind,
                "quantile": 0 if kind == "activating" else None,
                "seq_id": i,
                "start": 0,
                "tokens": np.asarray(ids),
                "strings": [STRINGS[t] for t in ids],
                "activations": a,
                "activations_norm": a / 2.0,
            }
        )
    return LatentExamples("layers.0", 7, records, VOCAB)


def answer(body: dict[str, Any]) -> str:
    """The judge: Yes when the excerpt holds "return" (read off the user prompt's Excerpt)."""
    user = body["messages"][-1]["content"]
    excerpt = user.split("Excerpt:\n", 1)[1].split("\n\n", 1)[0]
    return "Yes" if "return" in excerpt else "No"


def alternatives(token: str) -> list[tuple[str, float]]:
    if token == "Yes":
        return [("Yes", math.log(0.7)), (" No", math.log(0.2)), ("The", math.log(0.1))]
    return [("No", math.log(0.6)), ("yes", math.log(0.3)), ("I", math.log(0.1))]


@pytest.fixture
def judge_server(api_key: str) -> Any:
    srv = FakeServer(responder=answer, alternatives=alternatives).start()
    yield srv
    srv.stop()


def run_scorer(server: FakeServer, cls: type, model: str, **score: Any) -> Any:
    config = ScoreConfig.model_validate({"n_boot": 50, **score})
    ctx = ScoreContext(config=config, seed=0, llm_model=model, backend="openai")
    client = create_client(fast_config(server, model=model))
    return asyncio.run(cls(ctx).score(examples(), EXPLANATION, client))


def test_auto_format_is_single_for_small_local_judges_only() -> None:
    assert resolve_format("auto", "vllm:Qwen/Qwen3-8B") == "single"  # in-process engine
    assert resolve_format("auto", "openai:qwen2.5-coder-1.5b-instruct") == "single"  # catalog
    assert resolve_format("auto", "openai:gpt-4o-mini") == "batch"
    assert resolve_format("auto", "lexical") == "batch"
    assert resolve_format("batch", "vllm:smollm2-135m-instruct") == "batch"
    assert resolve_format("single", "openai:gpt-4o-mini") == "single"
    # an explainer's selection judge names its model bare (best-of-k) or not at all (iterative)
    assert resolve_format("auto", "gpt-4o-mini") == "batch"
    assert resolve_format("auto", "") == "batch"
    assert resolve_format("auto", "smollm2-135m-instruct") == "single"


def test_detection_one_window_per_prompt(judge_server: FakeServer) -> None:
    res = run_scorer(judge_server, DetectionScorer, "openai:smollm2-135m-instruct")
    bodies = [r["body"] for r in judge_server.requests]
    assert judge_server.hits == len(WINDOWS) == len(bodies)  # one request per window, no retry
    users = sorted(b["messages"][1]["content"] for b in bodies)
    texts = sorted("".join(STRINGS[t] for t in ids) for ids, _, _ in WINDOWS)
    assert users == sorted(
        prompts.render("detection_single_user", explanation=EXPLANATION, example=t) for t in texts
    )
    assert users[0].startswith("Excerpt:\n") and users[0].endswith(
        f"\n\nDoes the excerpt contain {EXPLANATION}? Yes or No?"
    )
    for b in bodies:
        assert b["messages"][0] == {
            "role": "system",
            "content": prompts.text("judge_single_system"),
        }
        assert b["max_tokens"] == 3 and b["top_logprobs"] == 10 and b["logprobs"] is True
        assert "response_format" not in b  # a plain Yes/No, no JSON
    # per window: the prediction and P(yes) read off the alternatives; rows in window order
    truth = [kind == "activating" for _, _, kind in WINDOWS]
    said = ["    return" in [STRINGS[t] for t in ids] for ids, _, _ in WINDOWS]
    assert [r["truth"] for r in res.examples] == truth
    assert [r["prediction"] for r in res.examples] == said
    probs = [P_YES if s else P_NO for s in said]
    assert [r["probability"] for r in res.examples] == pytest.approx(probs)
    assert [r["position"] for r in res.examples] == [0] * len(WINDOWS)
    assert sorted(r["prompt"] for r in res.examples) == list(range(len(WINDOWS)))
    assert res.status == "ok" and res.n_examples == len(WINDOWS) and res.n_lost == 0
    assert res.metrics["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(truth, said))
    assert res.metrics["auroc"] == pytest.approx(roc_auc_score(truth, probs))
    assert res.tally.requests == len(WINDOWS) and res.tally.truncated == 0


def test_fuzzing_prompt_starts_with_the_detection_prompt(judge_server: FakeServer) -> None:
    model = "openai:qwen2.5-coder-1.5b-instruct"
    run_scorer(judge_server, DetectionScorer, model)
    det = {b["messages"][1]["content"] for b in (r["body"] for r in judge_server.requests)}
    judge_server.requests.clear()
    res = run_scorer(judge_server, FuzzingScorer, model)
    fuzz = [r["body"]["messages"][1]["content"] for r in judge_server.requests]
    assert len(fuzz) == len(WINDOWS) == res.n_examples
    for user in fuzz:  # the shared prefix runs through the window's text
        excerpt_end = user.index("\n\nMarked tokens ")
        assert any(d.startswith(user[:excerpt_end]) for d in det), user
        assert user.endswith(f"\n\nAre the marked tokens {EXPLANATION}? Yes or No?")
    # each window's own marks (the highlighted offsets its row records), unnumbered
    for row in res.examples:
        ids = WINDOWS[row["seq_id"]][0]
        mask = np.zeros(len(ids), dtype=bool)
        mask[row["highlighted"]] = True
        text = "".join(STRINGS[t] for t in ids)
        own = marks([STRINGS[t] for t in ids], mask)
        mine = [u for u in fuzz if u.startswith(f"Excerpt:\n{text}\n\nMarked tokens (")]
        assert len(mine) == 1 and f'"(2nd)"): {own}\n\n' in mine[0], (own, mine)


def test_batch_format_for_api_judges(judge_server: FakeServer) -> None:
    judge_server.responder = lambda body: '{"answers": [1, 0, 0, 0, 0, 0]}'
    res = run_scorer(
        judge_server, DetectionScorer, "openai:gpt-4o-mini", detection={"examples_per_prompt": 6}
    )
    assert judge_server.hits == 1 and res.n_examples == len(WINDOWS)
    assert "response_format" in judge_server.requests[0]["body"]


def test_read_one_answers() -> None:
    def resp(text: str, top: list[tuple[str, float]] | None, token: str | None = None) -> Any:
        lp = None
        if top is not None:
            tops = [TopLogprob(token=t, logprob=v) for t, v in top]
            tok = token if token is not None else text.split()[0]
            lp = [TokenLogprob(token=tok, logprob=dict(top).get(tok, -3.0), top=tops)]
        return LLMResponse(text=text, logprobs=lp)

    assert read_one(resp("No.", None)) == ([0], None, None)  # no logprobs: the word
    assert read_one(resp("yes, it does", None)) == ([1], None, None)
    labels, probs, err = read_one(resp("Yes", [("Yes", math.log(0.5)), ("No", math.log(0.25))]))
    assert labels == [1] and err is None and probs == pytest.approx([2 / 3])
    # another word first: the label from P(yes) when yes/no are among the alternatives
    labels, probs, _ = read_one(resp("The", [("The", -0.1), (" no", math.log(0.3)), ("Yes", -5)]))
    assert labels == [0] and probs == pytest.approx([math.exp(-5) / (0.3 + math.exp(-5))])
    assert read_one(resp("Maybe", [("Maybe", -0.1), ("Perhaps", -2.0)])) == (
        None,
        None,
        "answer 'Maybe' is not Yes or No",
    )
    assert read_one(LLMResponse(error="boom")) == (None, None, "boom")
    # the chosen token outside the top alternatives still counts
    pos = TokenLogprob(
        token="No", logprob=math.log(0.1), top=[TopLogprob(token="Yes", logprob=math.log(0.3))]
    )
    assert yes_probability(pos) == pytest.approx(0.75)
