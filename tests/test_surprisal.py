"""The surprisal scorer: on a tiny LM trained so that a prefix naming a topic predicts the
topic's words, a matching explanation lowers the loss of the activating windows far more than
an unrelated one; the cached-prefix batches equal plain forward passes; the LLM-logprob path
against the fake server with scripted prompt logprobs; the demo LM end to end on a run."""

from __future__ import annotations

import asyncio
import math
import random
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from fake_server import FakeServer
from llm_helpers import SECRET
from synthetic_cache import random_cache

from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.llm.client import create_client
from autointerp.runner.examples import LatentExamples
from autointerp.sampling import SampleConfig
from autointerp.sampling.build import build_examples
from autointerp.scorers import surprisal_lm
from autointerp.scorers.base import ScoreContext
from autointerp.scorers.config import ScoreConfig
from autointerp.scorers.registry import check_scorers
from autointerp.scorers.run import score
from autointerp.scorers.surprisal import SurprisalScorer, explained_prefix, neutral_prefix

TOPICS = {
    "cats": ["cat", "meow", "purr", "kitten"],
    "code": ["def", "return", "class", "import"],
    "sea": ["wave", "fish", "boat", "salt"],
    "music": ["song", "drum", "tune", "bass"],
}
DOCS = Path(__file__).parents[1] / "docs"


def words(rng: random.Random, topic: str, n: int = 8) -> list[str]:
    return [" " + rng.choice(TOPICS[topic]) for _ in range(n)]


@pytest.fixture(scope="module")
def topic_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama trained (200 steps, ~2-7 s on one core) on documents "<prefix>\\n<8 words>":
    after the explanation prefix naming a topic the words are that topic's (4 choices), after
    the neutral prefix any topic's (16). The scorer's own templates are the prefixes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("topic_lm")
    rng = random.Random(0)
    torch.manual_seed(0)

    def doc() -> str:
        topic = rng.choice(list(TOPICS))
        prefix = explained_prefix(topic) if rng.random() < 0.5 else neutral_prefix()
        return prefix + "".join(words(rng, topic))

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([doc() for _ in range(500)], trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|eos|>"
    )
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more threads only contend (7x slower on 2 cores)
    try:
        for _ in range(200):
            batch = fast([doc() for _ in range(32)], return_tensors="pt", padding=True)
            labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
            loss = model(**batch, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path


def latent(topic: str, contrast: tuple[str, ...] = ("code", "music"), n: int = 12):
    """Activating windows of ``topic``'s words, contrast windows of other topics'."""
    rng = random.Random(topic)
    records = []
    for i in range(n * (1 + len(contrast))):
        kind, t = ("activating", topic) if i < n else ("random", contrast[i % len(contrast)])
        records.append(
            {
                "split": "test",
                "kind": kind,
                "sampler": "quantile" if kind == "activating" else kind,
                "quantile": i % 10 if kind == "activating" else None,
                "seq_id": i,
                "start": 0,
                "strings": words(rng, t),
            }
        )
    return LatentExamples("layers.0", 0, records, vocab=None)  # type: ignore[arg-type]


def scorer(**section: object) -> SurprisalScorer:
    cfg = ScoreConfig(surprisal={"device": "cpu", "batch_size": 8, **section})
    return SurprisalScorer(ScoreContext(config=cfg, seed=0, llm_model="lexical", backend="lexical"))


def test_matching_explanation_drops_the_loss_more_than_an_unrelated_one(topic_lm: Path) -> None:
    s = scorer(model=str(topic_lm))
    ex = latent("cats")
    res = {e: asyncio.run(s.score(ex, e, None)) for e in ("cats", "sea", "code")}  # type: ignore
    match, unrelated, contrast = (res[e].metrics for e in ("cats", "sea", "code"))
    assert all(r.status == "ok" and r.n_lost == 0 and r.n_examples == 36 for r in res.values())
    assert match["auroc"] == 1.0 and match["drop_activating"] > 0.05
    assert match["drop_activating"] > unrelated["drop_activating"] + 0.3
    assert match["drop_activating"] > match["drop_contrast"] + 0.3
    assert contrast["auroc"] < 0.5  # it helps the "code" contrast windows instead
    assert s.model == "hf:" + str(topic_lm) and res["cats"].tally.requests == 0
    row = res["cats"].examples[0]
    assert math.isclose(row["drop"], row["loss_neutral"] - row["loss_explained"])
    assert row["n_tokens"] == 8 and row["truth"] is True and row["error"] is None


def test_prefix_runs_once_and_cached_batches_equal_plain_forwards(
    topic_lm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = surprisal_lm.get_lm(str(topic_lm), "cpu", "float32", 3)
    calls = []
    real = surprisal_lm.PrefixLM.prefix
    monkeypatch.setattr(
        surprisal_lm.PrefixLM, "prefix", lambda self, t: calls.append(t) or real(self, t)
    )
    rng = random.Random(5)
    texts = ["".join(words(rng, t, n=3 + i % 6)) for i, t in enumerate(list(TOPICS) * 3)]
    prefix = explained_prefix("sea")
    got = lm.explained_losses(prefix, texts)
    assert calls == [prefix]  # one prefix pass for 12 windows in batches of 3
    tok, model = lm.tokenizer, lm.model
    for text, loss in zip(texts, got, strict=True):
        p = tok(prefix)["input_ids"]
        w = tok(text, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            logp = model(torch.tensor([p + w])).logits[0].float().log_softmax(-1)
        want = -np.mean([logp[len(p) + i - 1, t].item() for i, t in enumerate(w)])
        assert loss.n_tokens == len(w) and loss.error is None
        assert math.isclose(loss.loss, want, rel_tol=1e-4, abs_tol=1e-5)


def scripted_logprobs(tokens: list[str], request: dict) -> list[float]:
    """A scripted LM: a word of the topic named on the prompt's first line costs 0.5 nats,
    any other token 3.0 (the fake server splits prompts on whitespace)."""
    first = request["prompt"].split("\n")[0].split()
    known = {w for t in first if t in TOPICS for w in TOPICS[t]}
    return [-0.5 if t in known else -3.0 for t in tokens[1:]]


def test_llm_backend_reads_the_windows_prompt_logprobs(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    server = FakeServer(prompt_scorer=scripted_logprobs).start()
    try:
        cfg = load_config(
            None,
            {
                "run_dir": str(tmp_path),
                "llm.model": "openai:fake",
                "llm.base_url": server.base_url,
                "llm.api_key_env": "FAKE_LLM_KEY",
                "score.surprisal.backend": "llm",
            },
        )
        ctx = ScoreContext(config=cfg.score, seed=0, llm_model=cfg.llm.model, backend="openai")
        s = SurprisalScorer(ctx)
        ex = latent("cats")

        async def go(expl: str):
            async with create_client(cfg.llm, tmp_path) as client:
                return await s.score(ex, expl, client)

        match = asyncio.run(go("cats"))
        assert server.hits == 2 * 36 and match.tally.requests == 72
        m = match.metrics
        assert m["auroc"] == 1.0 and m["drop_activating"] == 2.5 and m["drop_contrast"] == 0.0
        row = match.examples[0]
        assert (row["loss_neutral"], row["loss_explained"], row["n_tokens"]) == (3.0, 0.5, 8)
        body = server.requests[0]["body"]
        assert body["prompt_logprobs"] == 0 and body["max_tokens"] == 1
        other = asyncio.run(go("sea"))
        assert server.hits == 72 + 36  # the neutral requests came from the response cache
        assert other.metrics["auroc"] == 0.5 and other.metrics["drop_activating"] == 0.0
    finally:
        server.stop()


def test_lexical_cannot_give_logprobs_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="surprisal.backend to hf"):
        check_scorers(["surprisal"], "lexical", "auto", "llm")
    assert check_scorers(["surprisal"], "lexical", "auto", "hf") == ["surprisal"]


def test_demo_lm_end_to_end_writes_documented_tables(tmp_path: Path) -> None:
    run = tmp_path / "run"
    random_cache(run, n_seqs=120, n_latents=8)
    decoder = torch.randn(8, 8, generator=torch.Generator().manual_seed(0))
    build_examples(run, SampleConfig(seed=1, window_len=16), decoder=decoder, progress=False)
    cfg = load_config(None, {"run_dir": str(run), "score.surprisal.device": "cpu"})
    explain(run, cfg, progress=False)
    wrong = load_config(None, {"run_dir": str(run), "score.surprisal.backend": "llm"})
    with pytest.raises(ValueError, match="lexical baseline does not give"):
        score(run, wrong, scorers=["surprisal"], progress=False)
    assert not (run / "scores").exists()
    paths = score(run, cfg, scorers=["surprisal"], latents=range(2, 6), progress=False)
    df = pl.read_parquet(paths["surprisal"])
    ok = df.filter(pl.col("status") == "ok")
    assert ok.height == 4 and (ok["model"] == "hf:demo-lm").all() and (ok["n_requests"] == 0).all()
    assert ok["auroc"].is_finite().all() and (ok["auroc_chance"] == 0.5).all()
    ex = pl.read_parquet(paths["surprisal"].with_name("surprisal.examples.parquet"))
    assert ex.filter(pl.col("error").is_null())["drop"].is_finite().all()
    doc = (DOCS / "score.md").read_text()
    for col in [*df.columns, *ex.columns]:
        assert f"`{col}`" in doc or f"`{col.removesuffix('_lo').removesuffix('_hi')}`" in doc, col
    again = score(run, cfg, scorers=["surprisal"], latents=range(2, 6), progress=False)
    assert pl.read_parquet(again["surprisal"]).height == df.height  # resumed: nothing redone
    shutil.rmtree(run)
