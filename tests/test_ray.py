"""The Ray engine on a local 2-CPU Ray cluster, against the fake server: the same files as one
process, and a Ray worker killed with -9 mid-run costs no answer twice (Ray retries its task,
which merges the dead task's cache shard first; a rerun asks nothing)."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from fake_server import FakeServer
from llm_helpers import SECRET
from polars.testing import assert_frame_equal
from scripted_judge import ScriptedJudge
from stage_helpers import served, synthetic_run

from autointerp.explainers.run import explain
from autointerp.scorers.run import KEY, score

N_LAT = 120
CONCURRENCY = 8
ACCOUNTING = ["latency_s", "n_cached_requests", "cost_usd"]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[object]:
    import ray

    os.environ["FAKE_LLM_KEY"] = SECRET  # Ray workers inherit the environment at start
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("ray") / "run", N_LAT)


@pytest.fixture
def judge() -> Iterator[FakeServer]:
    srv = FakeServer(latency=0.02, responder=ScriptedJudge(record=False)).start()
    yield srv
    srv.stop()


def _copy(base: Path, dst: Path) -> Path:
    shutil.copytree(base, dst)
    return dst


def _tables(run: Path) -> dict[str, pl.DataFrame]:
    expl = pl.read_parquet(run / "explanations.parquet").drop("latency_s")
    det = pl.read_parquet(run / "scores" / "detection.parquet").drop(ACCOUNTING)
    return {"explanations": expl, "detection": det}


@pytest.mark.slow
def test_ray_writes_the_same_files_as_one_process(
    ray_cluster: object, base: Path, tmp_path: Path, judge: FakeServer
) -> None:
    one = _copy(base, tmp_path / "one")
    cfg = served(one, judge, **{"execution.workers": 1, "score.workers": 1})
    explain(one, cfg, progress=False)
    score(one, cfg, scorers=["detection"], progress=False)
    hits = judge.hits
    two = _copy(base, tmp_path / "two")
    cfg = served(two, judge, **{"execution.engine": "ray", "execution.workers": 2})
    explain(two, cfg, progress=False)
    score(two, cfg, scorers=["detection"], progress=False)
    assert judge.hits == 2 * hits  # its own cache: every request once, no more
    want, got = _tables(one), _tables(two)
    for name in want:
        assert_frame_equal(got[name], want[name])
    assert not list(two.glob("llm_cache.*.sqlite*")) and not (two / "scores" / "_parts").exists()


def _busy_worker(run: Path) -> int:
    """The pid of the Ray worker whose cache shard was written last (a task in progress)."""
    found: dict[int, float] = {}
    for shard in run.glob("llm_cache.r*-*.sqlite*"):
        if shard.name.endswith(".lock"):
            continue
        try:
            pid = int(shard.name.split(".")[1].rsplit("-", 1)[-1])
            found[pid] = max(found.get(pid, 0.0), shard.stat().st_mtime)
        except (OSError, ValueError):
            continue  # merged meanwhile
    return max(found, key=found.__getitem__)


@pytest.mark.slow
def test_a_ray_worker_killed_mid_run_costs_no_answer_twice(
    ray_cluster: object, base: Path, tmp_path: Path, judge: FakeServer
) -> None:
    ref = _copy(base, tmp_path / "ref")
    cfg = served(ref, judge, **{"execution.workers": 1, "score.workers": 1})
    explain(ref, cfg, progress=False)
    score(ref, cfg, scorers=["detection"], progress=False)
    run = _copy(base, tmp_path / "run")
    shutil.copy(ref / "explanations.parquet", run / "explanations.parquet")
    cfg = served(
        run,
        judge,
        **{"execution.engine": "ray", "execution.workers": 2, "llm.concurrency": CONCURRENCY},
    )
    start = len(judge.events)
    killed: list[float] = []

    def kill_one_worker() -> None:
        while len(judge.events) - start < 300:  # of ~1,200 events
            time.sleep(0.01)
        os.kill(_busy_worker(run), signal.SIGKILL)
        killed.append(time.time())

    killer = threading.Thread(target=kill_one_worker, daemon=True)
    killer.start()
    score(run, cfg, scorers=["detection"], progress=False)  # Ray retries the lost task
    killer.join(5)
    assert killed, "the run ended before a worker could be killed"
    hits = judge.hits
    score(run, cfg, scorers=["detection"], progress=False)  # the rerun: nothing left to ask
    assert judge.hits == hits
    events = list(judge.events)[start:]
    before = {k for t, kind, k in events if kind == "answered" and t < killed[0]}
    after = {k for t, kind, k in events if kind == "hit" and t > killed[0]}
    assert len(before & after) <= CONCURRENCY // 2  # only the dead task's requests in flight
    got = pl.read_parquet(run / "scores" / "detection.parquet")
    assert got.height == got.select(KEY).n_unique() == N_LAT
    want = pl.read_parquet(ref / "scores" / "detection.parquet")
    assert_frame_equal(got.drop(ACCOUNTING), want.drop(ACCOUNTING))
