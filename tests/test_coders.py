"""Every coder format loads from disk and matches a dense reference encode."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from coder_files import (
    WrittenCoder,
    write_dictionary_learning,
    write_gemma_scope,
    write_sae_lens,
    write_sparsify,
)

from autointerp.coders import loader
from autointerp.coders.base import CoderLoadError, CoderShapeError, SparseCoder
from autointerp.coders.loader import check_width, detect_format, load_coder

D_IN, N = 16, 64


def _check_matches(coder: SparseCoder, ref: WrittenCoder, n_rows: int = 40) -> None:
    x = torch.randn(n_rows, ref.d_in, generator=torch.Generator().manual_seed(1))
    expected = ref.encode(x)
    dense = coder.encode(x)
    assert dense.dtype == torch.float32 and dense.shape == (n_rows, ref.n_latents)
    torch.testing.assert_close(dense, expected, atol=1e-5, rtol=1e-5)
    assert (expected > 0).sum() > 0, "reference must have active latents"
    sp = coder.encode_sparse(x)
    assert torch.all(sp.rows[1:] >= sp.rows[:-1]) and torch.all(sp.values > 0)
    rebuilt = torch.zeros_like(expected)
    rebuilt[sp.rows, sp.latents] = sp.values
    torch.testing.assert_close(rebuilt, expected, atol=1e-5, rtol=1e-5)
    # other dtypes and leading dims are accepted
    torch.testing.assert_close(coder.encode(x.double()), dense)
    assert coder.encode(x.reshape(4, -1, ref.d_in)).shape == (4, n_rows // 4, ref.n_latents)
    assert coder.d_in == ref.d_in and coder.n_latents == ref.n_latents
    assert coder.decoder_rows.shape[0] == ref.n_latents


@pytest.mark.parametrize("transcode", [False, True])
def test_sparsify(tmp_path: Path, transcode: bool) -> None:
    ref = write_sparsify(tmp_path / "c", D_IN, N, k=5, transcode=transcode)
    coder = load_coder(str(tmp_path / "c"))
    assert detect_format(tmp_path / "c") == "sparsify" == coder.format_name
    assert coder.capture == ("input" if transcode else "output")
    _check_matches(coder, ref)
    torch.testing.assert_close(coder.decoder_rows, ref.weights["W_dec"])
    assert (coder.encode(torch.randn(3, D_IN)) > 0).sum(-1).max() <= 5


@pytest.mark.parametrize("architecture", ["standard", "topk", "jumprelu"])
@pytest.mark.parametrize("legacy_cfg", [False, True])
def test_sae_lens(tmp_path: Path, architecture: str, legacy_cfg: bool) -> None:
    ref = write_sae_lens(tmp_path, D_IN, N, architecture=architecture, legacy_cfg=legacy_cfg)
    coder = load_coder(str(tmp_path))
    assert coder.format_name == "sae_lens"
    _check_matches(coder, ref)


def test_sae_lens_variants(tmp_path: Path) -> None:
    ref = write_sae_lens(tmp_path / "a", D_IN, N, "jumprelu", log_threshold=True)
    _check_matches(load_coder(str(tmp_path / "a")), ref)
    ref = write_sae_lens(tmp_path / "b", D_IN, N, "standard", apply_b_dec_to_input=False)
    _check_matches(load_coder(str(tmp_path / "b")), ref)


def test_sae_lens_rejects_unsupported_normalisation(tmp_path: Path) -> None:
    write_sae_lens(tmp_path, D_IN, N)
    cfg = (tmp_path / "cfg.json").read_text()
    (tmp_path / "cfg.json").write_text(cfg.replace('"none"', '"expected_average_only_in"'))
    with pytest.raises(CoderLoadError, match="normalize_activations='expected_average_only_in'"):
        load_coder(str(tmp_path))


@pytest.mark.parametrize("use_safetensors", [False, True])
def test_gemma_scope(tmp_path: Path, use_safetensors: bool) -> None:
    ref = write_gemma_scope(tmp_path, D_IN, N, use_safetensors=use_safetensors)
    coder = load_coder(str(tmp_path))
    assert coder.format_name == "gemma_scope"
    _check_matches(coder, ref)


@pytest.mark.parametrize(
    ("dict_class", "threshold"),
    [
        ("AutoEncoder", -1.0),
        ("AutoEncoderTopK", -1.0),
        ("AutoEncoderTopK", 0.2),  # TopK ignores its threshold at inference
        ("BatchTopKSAE", -1.0),
        ("BatchTopKSAE", 0.2),
        ("JumpReluAutoEncoder", -1.0),
    ],
)
def test_dictionary_learning(tmp_path: Path, dict_class: str, threshold: float) -> None:
    ref = write_dictionary_learning(tmp_path, D_IN, N, dict_class=dict_class, threshold=threshold)
    coder = load_coder(str(tmp_path))
    assert coder.format_name == "dictionary_learning"
    _check_matches(coder, ref)


def test_detection_ignores_folder_names(tmp_path: Path) -> None:
    write_sparsify(tmp_path / "gemma-scope-sae_lens", D_IN, N, k=4)
    write_gemma_scope(tmp_path / "sparsify-sae", D_IN, N)
    write_dictionary_learning(tmp_path / "sae_lens_params.npz", D_IN, N)
    assert detect_format(tmp_path / "gemma-scope-sae_lens") == "sparsify"
    assert detect_format(tmp_path / "sparsify-sae") == "gemma_scope"
    assert detect_format(tmp_path / "sae_lens_params.npz") == "dictionary_learning"


def test_per_hookpoint_layout(tmp_path: Path) -> None:
    ref0 = write_sparsify(tmp_path / "model.layers.0", D_IN, N, k=4, seed=0)
    ref1 = write_sparsify(tmp_path / "model.layers.1.mlp@input", D_IN, N, k=4, seed=1)
    coder = load_coder(str(tmp_path), hookpoint="model.layers.0")
    _check_matches(coder, ref0)
    for spec in ("model.layers.1.mlp:input", "model.layers.1.mlp@input"):
        _check_matches(load_coder(str(tmp_path), hookpoint=spec), ref1)
    assert load_coder(str(tmp_path), hookpoint="model.layers.1.mlp").capture == "input"
    with pytest.raises(CoderLoadError, match="several hookpoints"):
        load_coder(str(tmp_path))
    with pytest.raises(CoderLoadError, match="no coder for hookpoint model.layers.7"):
        load_coder(str(tmp_path), hookpoint="model.layers.7")


def test_input_hookpoint_sets_capture(tmp_path: Path) -> None:
    write_sae_lens(tmp_path / "model.layers.0.mlp@input", D_IN, N)
    write_gemma_scope(tmp_path / "model.layers.0.mlp", D_IN, N)
    assert load_coder(str(tmp_path), "model.layers.0.mlp:input").capture == "input"
    gemma = load_coder(str(tmp_path), "model.layers.0.mlp")
    assert (gemma.format_name, gemma.capture) == ("gemma_scope", "output")


def test_sparsify_names_without_model_prefix(tmp_path: Path) -> None:
    ref = write_sparsify(tmp_path / "layers.3", D_IN, N, k=4)
    _check_matches(load_coder(str(tmp_path), hookpoint="model.layers.3"), ref)


def test_hub_path_uses_snapshot_download(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    ref = write_sparsify(repo / "model.layers.1", D_IN, N, k=4)
    write_sparsify(repo / "model.layers.0", D_IN, N, k=4, seed=3)
    calls: list[dict] = []

    def fake_snapshot(repo_id: str, revision: str | None = None, allow_patterns=None) -> str:
        calls.append({"repo_id": repo_id, "revision": revision, "allow": allow_patterns})
        dest = tmp_path / f"snap{len(calls)}"
        shutil.copytree(repo, dest)
        return str(dest)

    def fake_list(repo_id: str, revision: str | None = None) -> list[str]:
        return [str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()]

    monkeypatch.setattr(loader, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(loader, "list_repo_files", fake_list)
    coder = load_coder("org/sae-repo:model.layers.1", revision="v1")
    _check_matches(coder, ref)
    assert calls[-1] == {"repo_id": "org/sae-repo", "revision": "v1", "allow": ["model.layers.1/*"]}
    assert coder.source == "org/sae-repo:model.layers.1"
    coder = load_coder("org/sae-repo", hookpoint="model.layers.1")
    _check_matches(coder, ref)
    assert calls[-1]["allow"] == ["model.layers.1/*"]


def test_hub_download_failure_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> str:
        raise OSError("Repository Not Found for url\nmore detail")

    monkeypatch.setattr(loader, "snapshot_download", boom)
    with pytest.raises(CoderLoadError) as e:
        load_coder("no-such-org/no-such-repo:layer_1")
    assert "\n" not in str(e.value) and "no-such-org/no-such-repo" in str(e.value)


def test_width_mismatch_names_both_numbers(tmp_path: Path) -> None:
    write_sparsify(tmp_path, 512, 1024, k=8)
    coder = load_coder(str(tmp_path))
    check_width(coder, 512, "model.layers.1")
    with pytest.raises(CoderShapeError) as e:
        check_width(coder, 256, "model.layers.1")
    msg = str(e.value)
    assert "512" in msg and "256" in msg and "model.layers.1" in msg and "\n" not in msg
    with pytest.raises(CoderShapeError, match="width 3 .* d_in is 512"):
        coder.encode(torch.zeros(2, 3))


def test_missing_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CoderLoadError, match="does not exist locally and is not a hub id"):
        load_coder(str(tmp_path / "nowhere"))
    write_sparsify(tmp_path / "c", D_IN, N, k=4)
    (tmp_path / "c" / "sae.safetensors").unlink()
    with pytest.raises(CoderLoadError) as e:
        load_coder(str(tmp_path / "c"))
    msg = str(e.value)
    assert "cfg.json" in msg and "sae.safetensors" in msg and "\n" not in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(CoderLoadError, match="found: no files"):
        detect_format(tmp_path / "empty")


def test_inconsistent_config_and_weights(tmp_path: Path) -> None:
    write_sae_lens(tmp_path, D_IN, N)
    cfg = (tmp_path / "cfg.json").read_text().replace(f'"d_sae": {N}', '"d_sae": 7')
    (tmp_path / "cfg.json").write_text(cfg)
    with pytest.raises(CoderShapeError, match=r"W_enc .* shape \(16, 64\), expected \(16, 7\)"):
        load_coder(str(tmp_path))


def test_demo_layout_loads(tmp_path: Path) -> None:
    """The bundled demo SAE's layout (sparsify, one folder per hookpoint) loads."""
    ref = write_sparsify(tmp_path / "sae" / "model.layers.1", 256, 4096, k=32)
    coder = load_coder(str(tmp_path / "sae"), hookpoint="model.layers.1")
    assert (coder.d_in, coder.n_latents, coder.k) == (256, 4096, 32)
    _check_matches(coder, ref, n_rows=8)
