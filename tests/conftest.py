"""Shared fixtures: tiny subject models built from configs (random init, saved locally)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "llm"))  # fake_server, llm_helpers


def pytest_configure(config: pytest.Config) -> None:
    """scripts/mutation_check.py: apply the one defect named by AUTOINTERP_MUTATION (only when
    that variable is set; without it nothing here runs)."""
    name = os.environ.get("AUTOINTERP_MUTATION")
    if name:
        sys.path.insert(0, str(Path(__file__).parents[1] / "scripts"))
        import mutation_check

        mutation_check.apply(name)


@pytest.fixture(autouse=True, scope="module")
def _close_vllm_engines() -> object:
    """In-process vLLM engines stay loaded for the next stage of a process; a test module's
    are closed at its end (not at exit, when pytest has closed the streams vLLM logs to)."""
    yield
    backend = sys.modules.get("autointerp.llm.vllm_backend")
    if backend is not None:
        backend.close_engines()


def build_tiny_llama(path: Path, vocab_size: int = 96, hidden: int = 32, layers: int = 2) -> Path:
    """Save a tiny random Llama and a matching byte-level tokenizer to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = ["def f(x):\n    return x + 1\n", "the quick brown fox jumps over the lazy dog"] * 20
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama (hidden 32, 2 layers) with its tokenizer, saved to a temp folder."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))
