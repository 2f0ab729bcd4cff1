"""Subject model loading, hookpoint resolution and activation capture on a tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from autointerp.config import SubjectConfig
from autointerp.subject.hookpoints import (
    ActivationCapture,
    Hookpoint,
    UnknownHookpointError,
    hookpoint_width,
    parse_hookpoint,
    resolve_module,
)
from autointerp.subject.model import SubjectLoadError, load_subject, resolve_device


@pytest.fixture(scope="module")
def subject(tiny_model_dir: Path):
    cfg = SubjectConfig(model=str(tiny_model_dir), device="cpu", local_files_only=True)
    return load_subject(cfg)


@pytest.fixture(scope="module")
def ids(subject) -> torch.Tensor:
    _, tok = subject
    return tok(["def f(x): return x", "the quick brown fox!"], return_tensors="pt", padding=True)


def test_load_subject(subject) -> None:
    model, tok = subject
    assert not model.training and model.dtype == torch.float32
    assert tok.pad_token is not None
    assert not any(p.requires_grad for p in model.parameters())


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu-ish")


def test_missing_model_dir_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(SubjectLoadError) as e:
        load_subject(SubjectConfig(model=str(tmp_path / "nope"), device="cpu"))
    assert "does not exist" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SubjectLoadError, match="no config.json"):
        load_subject(SubjectConfig(model=str(tmp_path / "empty"), device="cpu"))
    cfg = SubjectConfig(model="no-such-org/no-such-model", device="cpu", local_files_only=True)
    with pytest.raises(SubjectLoadError) as e:
        load_subject(cfg)
    assert "no-such-org/no-such-model" in str(e.value) and "\n" not in str(e.value)


def test_parse_hookpoint() -> None:
    assert parse_hookpoint("model.layers.1") == Hookpoint(
        "model.layers.1", "model.layers.1", "output"
    )
    hp = parse_hookpoint("model.layers.1.mlp:input")
    assert (hp.module_path, hp.capture, hp.dirname) == (
        "model.layers.1.mlp",
        "input",
        "model.layers.1.mlp@input",
    )
    assert parse_hookpoint("model.layers.1.mlp@input") == hp
    assert parse_hookpoint("model.layers.1:output").spec == "model.layers.1"
    assert parse_hookpoint("gpt_neox.layers.5.mlp", default_capture="input") == hp.__class__(
        "gpt_neox.layers.5.mlp:input", "gpt_neox.layers.5.mlp", "input"
    )
    for bad in ("", "model.layers.1:middle", "model layers"):
        with pytest.raises(ValueError, match="bad hookpoint"):
            parse_hookpoint(bad)


def test_unknown_hookpoint_lists_close_names(subject) -> None:
    model, _ = subject
    with pytest.raises(UnknownHookpointError) as e:
        resolve_module(model, "model.layer.1")
    msg = str(e.value)
    assert "model.layers.1" in msg and "\n" not in msg
    names = msg.split("closest valid module names are ")[1].split(";")[0].split(", ")
    assert len(names) == 5
    with pytest.raises(UnknownHookpointError):
        ActivationCapture(model, ["model.layers.9"])  # fails before any forward pass


def test_capture_output_matches_hidden_states(subject, ids) -> None:
    model, _ = subject
    with torch.no_grad():
        ref = model(**ids, output_hidden_states=True).hidden_states
    with ActivationCapture(model, ["model.layers.0"]) as cap:
        acts = cap.run(ids.input_ids, ids.attention_mask)
    assert list(acts) == ["model.layers.0"]
    torch.testing.assert_close(acts["model.layers.0"], ref[1])
    assert acts["model.layers.0"].shape == (*ids.input_ids.shape, model.config.hidden_size)


def test_capture_input_matches_manual_hook(subject, ids) -> None:
    model, _ = subject
    seen: list[torch.Tensor] = []
    mlp = model.model.layers[1].mlp
    handle = mlp.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    try:
        with torch.no_grad():
            model(**ids)
    finally:
        handle.remove()
    with ActivationCapture(model, ["model.layers.1.mlp:input", "model.layers.0"]) as cap:
        acts = cap.run(ids.input_ids, ids.attention_mask)
    torch.testing.assert_close(acts["model.layers.1.mlp:input"], seen[0])
    assert set(acts) == {"model.layers.1.mlp:input", "model.layers.0"}
    assert not mlp._forward_pre_hooks  # hooks removed on exit


def test_stop_early_skips_later_layers(subject, ids) -> None:
    model, _ = subject
    calls = {"layer1": 0, "lm_head": 0}
    h1 = model.model.layers[1].register_forward_hook(lambda *_: calls.__setitem__("layer1", 1))
    h2 = model.lm_head.register_forward_hook(lambda *_: calls.__setitem__("lm_head", 1))
    try:
        with ActivationCapture(model, ["model.layers.0"], stop_early=True) as cap:
            cap.run(ids.input_ids)
        assert calls == {"layer1": 0, "lm_head": 0}
        with ActivationCapture(model, ["model.layers.0"], stop_early=False) as cap:
            cap.run(ids.input_ids)
        assert calls == {"layer1": 1, "lm_head": 1}
    finally:
        h1.remove()
        h2.remove()


def test_hookpoint_width(subject) -> None:
    model, _ = subject
    assert hookpoint_width(model, "model.layers.1") == model.config.hidden_size
    assert (
        hookpoint_width(model, "model.layers.1.mlp.act_fn:input") == model.config.intermediate_size
    )
