"""The cache stage as Ray tasks on a local 2-CPU Ray cluster: the same bytes as one process,
and a Ray worker killed mid-run, then a rerun with another number of workers, encodes only the
chunks that were not on disk."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cache import make_setup
from test_cache_resume import snapshot

from autointerp.cache import cache_activations
from autointerp.cache.writer import KILL_AFTER_CHUNKS_ENV
from autointerp.runner.procs import ShardFailedError

pytestmark = pytest.mark.slow
N_TOKENS = 4096  # 256 windows of 16 tokens: 16 chunks of 16 windows


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


def test_ray_cache_writes_the_same_bytes_as_one_process(
    ray_cluster: object, tmp_path: Path, tiny_model_dir: Path, reference: dict[str, bytes]
) -> None:
    s = make_setup(tmp_path, tiny_model_dir, n_tokens=N_TOKENS)
    timings: dict[str, float] = {}
    cache_activations(s.config(**_ray(**{"execution.workers": 2})), False, timings=timings)
    assert timings["chunks_encoded"] == timings["chunks_total"] == 16
    got = snapshot(s.root / "run")
    assert sorted(got) == sorted(reference)
    assert [k for k in reference if got[k] != reference[k]] == []
    assert not (s.root / "run" / "cache" / "model.layers.1" / "_work").exists()


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
    on_disk = len(list((work / "chunks").glob("chunk-*.arrow")))
    assert 2 <= on_disk < 16
    timings: dict[str, float] = {}
    config = s.config(**_ray(**{"execution.workers": 1}))  # another number of workers
    cache_activations(config, progress=False, timings=timings)
    assert timings["chunks_encoded"] == 16 - on_disk
    assert snapshot(s.root / "run") == reference
