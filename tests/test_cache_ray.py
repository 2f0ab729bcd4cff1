"""The cache stage as Ray tasks on a local 2-CPU Ray cluster: the same bytes as one process;
a Ray worker killed mid-run, then a rerun with another number of workers, encodes only the
chunks that were not on disk; and `autointerp run --ray` end to end."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml
from polars.testing import assert_frame_equal
from test_cache import make_setup
from test_cache_resume import snapshot
from typer.testing import CliRunner

from autointerp.cache import cache_activations
from autointerp.cache.writer import KILL_AFTER_CHUNKS_ENV
from autointerp.cli import app
from autointerp.coders.planted import DEFAULT_RULES, write_planted_coder
from autointerp.runner.procs import ShardFailedError

pytestmark = pytest.mark.slow
N_TOKENS = 4096  # 256 windows of 16 tokens: 16 chunks of 16 windows
ACCOUNTING = ["latency_s", "n_cached_requests", "cost_usd"]


def digests(run: Path) -> dict[str, str]:
    root = run / "cache"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> dict[str, bytes]:
    """The files of a one-process cache."""
    s = make_setup(tmp_path_factory.mktemp("ref"), tiny_model_dir, n_tokens=N_TOKENS)
    cache_activations(s.config(), progress=False)
    return snapshot(s.root / "run")


def _ray(**extra: object) -> dict[str, object]:
    return {"execution.engine": "ray", "execution.shards_per_worker": 2, **extra}


def test_cache_with_ray_writes_the_same_bytes_as_one_process(
    ray_cluster: object,
    tmp_path: Path,
    tiny_model_dir: Path,
    reference: dict[str, bytes],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`autointerp cache --ray`, a run directory relative to the current one, 2 workers (the
    local cluster's CPUs): every file has the bytes of the one-process cache."""
    s = make_setup(tmp_path, tiny_model_dir, n_tokens=N_TOKENS)
    monkeypatch.chdir(tmp_path)
    args = ["cache", "-c", str(s.yaml()), "--run-dir", "rel", "--ray=local", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    got = snapshot(tmp_path / "rel")
    assert sorted(got) == sorted(reference)
    assert [k for k in reference if got[k] != reference[k]] == []
    assert not (tmp_path / "rel" / "cache" / "model.layers.1" / "_work").exists()


def test_a_killed_ray_worker_then_a_rerun_encodes_only_the_missing_chunks(
    ray_cluster: object, tmp_path: Path, tiny_model_dir: Path, reference: dict[str, bytes]
) -> None:
    s = make_setup(tmp_path, tiny_model_dir, n_tokens=N_TOKENS)
    os.environ[KILL_AFTER_CHUNKS_ENV] = "2"  # a task's worker kills itself after 2 chunks
    try:
        config = s.config(**_ray(**{"execution.workers": 2, "execution.task_retries": 0}))
        with pytest.raises(ShardFailedError, match="Ray task failed"):
            cache_activations(config, progress=False)
    finally:
        del os.environ[KILL_AFTER_CHUNKS_ENV]
    work = s.root / "run" / "cache" / "model.layers.1" / "_work"
    on_disk = len(list((work / "chunks").glob("chunk-*.spill")))
    assert 2 <= on_disk < 16
    timings: dict[str, float] = {}
    config = s.config(**_ray(**{"execution.workers": 1}))  # another number of workers
    cache_activations(config, progress=False, timings=timings)
    assert timings["chunks_encoded"] == 16 - on_disk
    assert snapshot(s.root / "run") == reference


def test_run_with_ray_runs_every_stage_like_one_process(
    ray_cluster: object, tmp_path: Path
) -> None:
    """`autointerp run --ray`: cache (Ray tasks) -> sample -> explain -> score (Ray tasks) on
    the bundled demo model, against the same run in one process."""
    coder = write_planted_coder(tmp_path / "coder", DEFAULT_RULES)
    runs = {}
    for name, extra in (("one", []), ("ray", ["--ray=local", "-s", "execution.workers=2"])):
        config = tmp_path / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "run_dir": str(tmp_path / name),
                    "coder": {"path": str(coder)},
                    "cache": {
                        "hookpoints": ["model.layers.0"],
                        "n_tokens": 16384,
                        "chunk_windows": 64,
                    },
                    "score": {"scorers": ["detection"]},
                }
            )
        )
        args = ["run", str(config), "--stages", "cache,sample,explain,score", "--no-progress"]
        result = CliRunner().invoke(app, [*args, *extra])
        assert result.exit_code == 0, result.output
        runs[name] = tmp_path / name
    assert digests(runs["ray"]) == digests(runs["one"])
    for table, drop in (
        ("explanations.parquet", ["latency_s"]),
        ("scores/detection.parquet", ACCOUNTING),
    ):
        got, want = (pl.read_parquet(runs[n] / table).drop(drop) for n in ("ray", "one"))
        assert got.height == len(DEFAULT_RULES)
        assert_frame_equal(got, want)
    assert yaml.safe_load((runs["ray"] / "run.yaml").read_text())["execution"]["engine"] == "ray"
