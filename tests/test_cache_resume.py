"""Kill the cache command mid-run (SIGKILL from a test hook), rerun it, and get the same bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from test_cache import Setup, make_setup

from autointerp.cache.errors import CorruptCacheError
from autointerp.cache.merge import KILL_AFTER_SHARDS_ENV
from autointerp.cache.writer import KILL_AFTER_CHUNKS_ENV

pytestmark = pytest.mark.slow


def run_cli(config: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    code = "from typer.main import get_group; from autointerp.cli import app; get_group(app)()"
    cmd = [sys.executable, "-c", code, "cache", "-c", str(config), "--no-progress"]
    return subprocess.run(
        cmd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=300
    )


def snapshot(run_dir: Path) -> dict[str, bytes]:
    """Every file of the caches by relative path; meta.json without its path-dependent keys
    (each test writes its coder and dataset to its own temp folder)."""
    root = run_dir / "cache"
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "meta.json":
                meta = json.loads(data)
                meta.pop("coder"), meta.pop("config_hash")
                data = json.dumps(meta).encode()
            out[str(p.relative_to(root))] = data
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, bytes]:
    """The files of an uninterrupted run."""
    s = make_setup(tmp_path_factory.mktemp("ref"), tiny_model_dir)
    done = run_cli(s.yaml())
    assert done.returncode == 0, done.stderr
    return snapshot(s.root / "run")


def kill_then_resume(s: Setup, env: dict[str, str]) -> None:
    config = s.yaml()
    killed = run_cli(config, env)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work = s.root / "run" / "cache" / "model.layers.1" / "_work"
    assert work.is_dir() and not (work.parent / "meta.json").exists()
    done = run_cli(config)
    assert done.returncode == 0, done.stderr


def test_kill_during_forward_then_resume(
    tmp_path: Path, tiny_model_dir: Path, reference: dict[str, bytes]
) -> None:
    s = make_setup(tmp_path, tiny_model_dir)
    kill_then_resume(s, {KILL_AFTER_CHUNKS_ENV: "2"})
    assert snapshot(s.root / "run") == reference


def test_kill_during_merge_then_resume(
    tmp_path: Path, tiny_model_dir: Path, reference: dict[str, bytes]
) -> None:
    s = make_setup(tmp_path, tiny_model_dir)
    config = s.yaml()
    killed = run_cli(config, {KILL_AFTER_SHARDS_ENV: "2"})
    assert killed.returncode == -signal.SIGKILL
    parts = s.root / "run" / "cache" / "model.layers.1" / "activations"
    written = {p.name: p.stat().st_mtime_ns for p in parts.iterdir()}
    assert len(written) == 2
    assert run_cli(config).returncode == 0
    assert {p: parts.joinpath(p).stat().st_mtime_ns for p in written} == written  # not rewritten
    assert snapshot(s.root / "run") == reference


def test_truncated_chunk_is_named_on_resume(tmp_path: Path, tiny_model_dir: Path) -> None:
    s = make_setup(tmp_path, tiny_model_dir)
    config = s.yaml()
    assert run_cli(config, {KILL_AFTER_CHUNKS_ENV: "2"}).returncode == -signal.SIGKILL
    work = s.root / "run" / "cache" / "model.layers.1" / "_work"
    chunk = work / "chunks" / "chunk-000001.spill"
    chunk.write_bytes(chunk.read_bytes()[:100])
    failed = run_cli(config)
    assert failed.returncode == 2
    line = failed.stderr.strip().splitlines()[-1]
    assert "chunk-000001.spill" in line and "corrupt" in line and "delete it" in line
    chunk.unlink()
    assert run_cli(config).returncode == 0


def test_corrupt_part_is_detected_and_rebuilt(
    tmp_path: Path, tiny_model_dir: Path, reference: dict[str, bytes]
) -> None:
    from autointerp.cache import ActivationCache

    s = make_setup(tmp_path, tiny_model_dir)
    config = s.yaml()
    assert run_cli(config).returncode == 0
    parts = s.root / "run" / "cache" / "model.layers.1" / "activations"
    part = parts / "part-0000016-0000032.parquet"
    good = part.read_bytes()
    part.write_bytes(good[: len(good) // 2])
    cache = ActivationCache(s.root / "run", "model.layers.1")
    with pytest.raises(CorruptCacheError, match="part-0000016-0000032.parquet"):
        cache.read_latents(20, 21)
    assert len(cache.read_latents(0, 16)) > 0  # the other parts still read
    failed = run_cli(config)
    assert failed.returncode == 2 and "part-0000016-0000032.parquet" in failed.stderr
    garbled = bytearray(good)  # same length, bytes flipped inside a data page
    garbled[len(good) // 4 : len(good) // 4 + 16] = bytes(16)
    part.write_bytes(bytes(garbled))
    with pytest.raises(CorruptCacheError, match="part-0000016-0000032.parquet"):
        cache.read_latents(16, 32)
    part.unlink()
    assert run_cli(config).returncode == 0
    assert snapshot(s.root / "run") == reference
