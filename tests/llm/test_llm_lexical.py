"""The lexical baseline and the config's backend selection."""

from __future__ import annotations

import asyncio

import pytest
import yaml

from autointerp.config import RunConfig, load_config
from autointerp.llm.client import create_client, run_requests
from autointerp.llm.config import LLMConfig, parse_model_spec
from autointerp.llm.lexical import detect, explain, quoted_tokens, render_tokens, simulate
from autointerp.llm.types import LLMRequest

EXAMPLES = [
    {"tokens": ["x", " =", " self", ".", "a"], "activations": [0, 0, 3.0, 0, 0]},
    {"tokens": ["return", " self", ".", "b"], "activations": [0, 2.0, 0, 0]},
    {"tokens": ["def", " f", "(", "self", ")"], "activations": [1.0, 0, 0, 2.5, 0]},
]
CONTRAST = [["x", " =", " 1"], ["def", " g", "(", ")"], ["return", " x"]]


def test_explain_picks_distinctive_tokens() -> None:
    out = explain({"kind": "explain", "examples": EXAMPLES, "contrast": CONTRAST, "top_k": 3})
    assert out["tokens"][:2] == [" self", "self"]
    assert out["explanation"] == render_tokens(out["tokens"])
    assert out["explanation"].startswith('tokens: " self", "self"')
    assert explain({"kind": "explain", "examples": EXAMPLES}) == explain(
        {"kind": "explain", "examples": EXAMPLES}
    )


def test_quoted_tokens_roundtrip_and_fallback() -> None:
    toks = [" self", "\n", 'say "hi"']
    assert quoted_tokens(render_tokens(toks)) == toks
    words = quoted_tokens("Fires on Python keywords like return")
    assert words == ["Python", "keywords", "like", "return"]


def test_detect_and_simulate() -> None:
    explanation = 'tokens: "self", "def"'
    examples = [["x", " self"], ["a", "b"], ["def", " self"]]
    out = detect({"kind": "detect", "explanation": explanation, "examples": examples})
    assert out["labels"] == [1, 0, 1]
    assert out["probabilities"][1] == 0.0 and out["probabilities"][2] > out["probabilities"][0]
    sim = simulate({"kind": "simulate", "explanation": explanation, "examples": examples})
    assert sim["activations"] == [[0, 10], [0, 0], [10, 10]]


def test_lexical_backend_end_to_end(tmp_path) -> None:  # noqa: ANN001
    reqs = [
        LLMRequest(task={"kind": "explain", "examples": EXAMPLES, "contrast": CONTRAST}),
        LLMRequest(task={"kind": "detect", "explanation": '"self"', "examples": [["self"]]}),
        LLMRequest(prompt="no task"),
    ]
    results = run_requests(LLMConfig(), reqs, run_dir=tmp_path)
    explained, detected, bad = results
    assert explained.ok and explained.text.startswith("tokens: ")
    assert explained.model == "lexical-baseline" and explained.metadata["baseline"] is True
    assert explained.cost_usd == 0.0
    assert detected.parsed["labels"] == [1]
    assert not bad.ok and "structured tasks" in bad.error
    assert not (tmp_path / "llm_cache.sqlite").exists()  # nothing worth caching


def test_model_spec_selects_backend() -> None:
    assert parse_model_spec("vllm:Qwen/Qwen3-8B") == ("vllm", "Qwen/Qwen3-8B")
    assert parse_model_spec("openai:gpt-4o-mini") == ("openai", "gpt-4o-mini")
    assert parse_model_spec("openrouter:meta-llama/llama-3.3-70b-instruct")[0] == "openrouter"
    assert LLMConfig().backend == "lexical"
    for bad in ("gpt-4o", "foo:bar", "vllm:", "lexical:x"):
        with pytest.raises(ValueError):
            LLMConfig(model=bad)


def test_config_in_run_yaml(tmp_path) -> None:  # noqa: ANN001
    cfg = load_config(overrides={"llm.model": "openai:gpt-4o-mini", "llm.concurrency": 4})
    assert cfg.llm.model_name == "gpt-4o-mini" and cfg.llm.concurrency == 4
    dumped = yaml.safe_dump(cfg.model_dump(mode="json"))
    again = RunConfig.model_validate(yaml.safe_load(dumped))
    assert again.llm == cfg.llm
    with pytest.raises(ValueError):
        LLMConfig.model_validate({"api_key": "sk-x"})  # extra fields are forbidden


def test_openrouter_needs_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENROUTER_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENROUTER_API_KEY"):
        create_client(LLMConfig(model="openrouter:x/y"))
    monkeypatch.setenv("OPENROUTER_API_KEY", "sk-or-test")
    client = create_client(LLMConfig(model="openrouter:x/y"))
    assert str(client.backend._client.base_url).startswith("https://openrouter.ai/api/v1")
    asyncio.run(client.aclose())
