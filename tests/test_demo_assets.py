"""The bundled demo LM and SAE (trained by scripts/train_demo.py) load and show real features.

Plain torch only: this checks the files themselves, independently of ``autointerp.coders``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import autointerp
from autointerp.data.stdlib import stdlib_texts

DEMO = Path(autointerp.__file__).parent / "assets" / "demo"
LM_DIR = DEMO / "lm"
SAE_DIR = DEMO / "sae" / "model.layers.1"
D_IN, N_LATENTS, K = 256, 4096, 32

pytestmark = pytest.mark.skipif(
    not (LM_DIR / "config.json").exists(), reason="demo assets not generated"
)


@pytest.fixture(scope="module")
def lm_and_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(LM_DIR, local_files_only=True, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(LM_DIR, local_files_only=True)
    return model.eval(), tok


def test_lm_config_and_tokenizer(lm_and_tokenizer) -> None:
    model, tok = lm_and_tokenizer
    cfg = model.config
    assert cfg.hidden_size == D_IN
    assert cfg.num_hidden_layers == 2
    assert cfg.vocab_size == len(tok) == 4096
    assert cfg.tie_word_embeddings
    assert cfg.max_position_embeddings >= 256
    assert tok.bos_token == "<|bos|>" and tok.eos_token == "<|eos|>"
    assert tok.bos_token_id is not None and tok.eos_token_id is not None
    assert model.get_submodule("model.layers.1") is model.model.layers[1]
    text = "def add(a, b):\n    return a + b\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def test_sae_files() -> None:
    cfg = json.loads((SAE_DIR / "cfg.json").read_text())
    assert cfg["num_latents"] == N_LATENTS and cfg["k"] == K and cfg["d_in"] == D_IN
    assert cfg["expansion_factor"] == 16 and cfg["normalize_decoder"] is True
    assert not cfg["multi_topk"] and not cfg["skip_connection"] and not cfg["transcode"]
    tensors = load_file(str(SAE_DIR / "sae.safetensors"))
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    assert shapes == {
        "encoder.weight": (N_LATENTS, D_IN),
        "encoder.bias": (N_LATENTS,),
        "W_dec": (N_LATENTS, D_IN),
        "b_dec": (D_IN,),
    }
    assert all(t.dtype == torch.float32 for t in tensors.values())
    norms = tensors["W_dec"].norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-4)


def test_training_record_and_size() -> None:
    record = json.loads((DEMO / "TRAINING.json").read_text())
    for key in ("seed", "lm_val_loss", "sae_val_fvu", "dead_fraction", "sae_val_l0"):
        assert key in record
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())
    assert total < 30 * 2**20


@torch.inference_mode()
def test_sae_reconstructs_layer_1(lm_and_tokenizer) -> None:
    model, tok = lm_and_tokenizer
    text = next(stdlib_texts("validation"))
    ids = tok(text, add_special_tokens=False)["input_ids"][: 4 * 63]
    windows = torch.tensor(ids).view(4, 63)
    windows = torch.cat([torch.full((4, 1), tok.bos_token_id), windows], dim=1)

    captured: list[torch.Tensor] = []

    def hook(_module, _inputs, output) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = model.model.layers[1].register_forward_hook(hook)
    try:
        model(input_ids=windows)
    finally:
        handle.remove()
    x = captured[0][:, 1:].reshape(-1, D_IN).float()  # BOS position excluded

    sae = load_file(str(SAE_DIR / "sae.safetensors"))
    pre = torch.relu((x - sae["b_dec"]) @ sae["encoder.weight"].T + sae["encoder.bias"])
    values, indices = pre.topk(K, dim=-1)
    acts = torch.zeros_like(pre).scatter_(1, indices, values)
    recon = acts @ sae["W_dec"] + sae["b_dec"]
    fvu = ((x - recon) ** 2).sum() / ((x - x.mean(0)) ** 2).sum()
    assert fvu < 0.5, f"FVU {fvu:.3f}"
    assert ((acts > 0).sum(dim=1) == K).all()
