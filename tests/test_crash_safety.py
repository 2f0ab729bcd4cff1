"""kill -9 of a scoring run with 2 worker processes, against a fake server that records every
request: the rerun asks again for no answer received before the kill (only requests in flight,
at most the concurrency, may repeat), no orphan worker sends a request more than ~2 s after its
parent died, and the final files equal an uninterrupted run's with one row per key."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from fake_server import Action, FakeServer
from llm_helpers import SECRET
from polars.testing import assert_frame_equal
from scripted_judge import ScriptedJudge
from stage_helpers import served, synthetic_run

from autointerp.config import RunConfig, load_config, save_config
from autointerp.explainers.run import explain
from autointerp.runner.lock import RunDirBusyError, run_lock
from autointerp.runner.table import PartTable
from autointerp.scorers.run import KEY, score

N_LAT = 120
CONCURRENCY = 8
ROOT = Path(__file__).parents[1]
ACCOUNTING = ["latency_s", "n_cached_requests", "cost_usd"]  # how, not what, was answered
# the judge's endpoint (and so the config hashes) names the fake server's port, which differs
# between the reference run's server and the killed run's
ENDPOINT = ["config_hash", "scorer_config", "judge_endpoint"]


def _portless(df: pl.DataFrame) -> pl.DataFrame:
    return df.drop([c for c in ENDPOINT if c in df.columns])


@pytest.fixture(scope="module")
def explained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = synthetic_run(tmp_path_factory.mktemp("crash") / "run", N_LAT)
    explain(run, load_config(None, {"run_dir": str(run)}), progress=False)
    return run


@pytest.fixture
def judge(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    srv = FakeServer(latency=0.02, responder=ScriptedJudge(record=False)).start()
    yield srv
    srv.stop()


def _config(run: Path, srv: FakeServer, workers: int) -> RunConfig:
    return served(run, srv, **{"llm.concurrency": CONCURRENCY, "score.workers": workers})


def _start(run: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FAKE_LLM_KEY": SECRET}
    cmd = [sys.executable, "-c", "from autointerp.cli import app; app()"]
    args = ["score", str(run), "--scorers", "detection", "--no-progress"]
    return subprocess.Popen(cmd + args, env=env, start_new_session=True, stderr=subprocess.PIPE)


def _answered(srv: FakeServer) -> int:
    return sum(1 for _, kind, _ in list(srv.events) if kind == "answered")


def _kill_mid_run(srv: FakeServer, proc: subprocess.Popen[bytes], whole: bool) -> float:
    deadline = time.monotonic() + 120
    while _answered(srv) < 150:  # of ~600 requests
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.01)
    if whole:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(proc.pid, signal.SIGKILL)
    killed = time.time()
    proc.wait()
    return killed


def _repeated(srv: FakeServer, killed: float) -> int:
    events = list(srv.events)
    before = {k for t, kind, k in events if kind == "answered" and t < killed}
    after = {k for t, kind, k in events if kind == "hit" and t > killed}
    return len(before & after)


@pytest.fixture(scope="module")
def reference(explained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same scoring, uninterrupted, in one process, in a copy of the run."""
    ref = tmp_path_factory.mktemp("ref") / "run"
    shutil.copytree(explained, ref)
    os.environ.setdefault("FAKE_LLM_KEY", SECRET)
    srv = FakeServer(responder=ScriptedJudge(record=False)).start()
    try:
        score(ref, _config(ref, srv, 1), scorers=["detection"], progress=False)
    finally:
        srv.stop()
    return ref


def _check_final(run: Path, ref: Path) -> None:
    got = pl.read_parquet(run / "scores" / "detection.parquet")
    want = pl.read_parquet(ref / "scores" / "detection.parquet")
    assert got.height == got.select(KEY).n_unique() == N_LAT  # one row per key, none lost
    assert got["config_hash"].n_unique() == 1
    assert_frame_equal(_portless(got.drop(ACCOUNTING)), _portless(want.drop(ACCOUNTING)))
    ex = _portless(pl.read_parquet(run / "scores" / "detection.examples.parquet"))
    ref_ex = _portless(pl.read_parquet(ref / "scores" / "detection.examples.parquet"))
    order = [c for c, t in ex.schema.items() if not isinstance(t, pl.List)]
    assert ex.height == ref_ex.height
    assert_frame_equal(ex.sort(order), ref_ex.select(ex.columns).sort(order))
    assert not list(run.glob("llm_cache.*.sqlite"))  # every worker shard merged


@pytest.mark.slow
@pytest.mark.parametrize("whole", [True, False], ids=["kill-run", "kill-parent"])
def test_kill_9_then_rerun_pays_nothing_twice(
    explained: Path, reference: Path, tmp_path: Path, judge: FakeServer, whole: bool
) -> None:
    run = tmp_path / "run"
    shutil.copytree(explained, run)
    save_config(_config(run, judge, 2), run)
    killed = _kill_mid_run(judge, _start(run), whole)
    time.sleep(3.0)  # any orphan would keep asking meanwhile
    late = [t for t, kind, _ in list(judge.events) if kind == "hit" and t > killed + 2.0]
    assert late == []  # no request from a worker more than 2 s after its parent died
    rerun = _start(run)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()[-2000:]
    assert _repeated(judge, killed) <= CONCURRENCY  # only what was in flight
    _check_final(run, reference)


def test_a_second_process_on_a_run_dir_gets_a_clear_error(explained: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(explained, run)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from autointerp.runner.lock import run_lock\n"
            "with run_lock(sys.argv[1], 'score'):\n    print('held', flush=True); time.sleep(60)",
            str(run),
        ],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        cfg = load_config(None, {"run_dir": str(run)})
        with pytest.raises(RunDirBusyError, match=rf"in use by pid {holder.pid} .*score"):
            score(run, cfg, scorers=["detection"], progress=False)
        assert not (run / "scores").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run, "score"), run_lock(run, "explain"):  # free again; re-entrant
        pass


def test_merge_keeps_one_row_per_key_from_the_newest_part(tmp_path: Path) -> None:
    key = ["latent", "config_hash"]
    first = PartTable(tmp_path / "t.parquet", key)
    first.add(
        [{"latent": 1, "config_hash": "a", "v": 1.0}, {"latent": 2, "config_hash": "a", "v": 2.0}]
    )
    first.flush()
    second = PartTable(tmp_path / "t.parquet", key)  # e.g. a rerun racing a dying process
    second.add(
        [{"latent": 2, "config_hash": "a", "v": 20.0}, {"latent": 3, "config_hash": "a", "v": 3.0}]
    )
    second.flush()
    out = pl.read_parquet(second.close())
    assert out.to_dicts() == [
        {"latent": 1, "config_hash": "a", "v": 1.0},
        {"latent": 2, "config_hash": "a", "v": 20.0},
        {"latent": 3, "config_hash": "a", "v": 3.0},
    ]
    # a table of several rows per key (examples): the newest source's rows, all of them
    ex = PartTable(tmp_path / "e.parquet", key, sort=False)
    ex.add([{"latent": 1, "config_hash": "a", "i": i} for i in range(3)])
    ex.flush()
    ex.add([{"latent": 1, "config_hash": "a", "i": i + 10} for i in range(2)])
    ex.add([{"latent": 2, "config_hash": "a", "i": 0}])
    out = pl.read_parquet(ex.close()).sort("latent", "i")
    assert out["i"].to_list() == [10, 11, 0] and out["latent"].to_list() == [1, 1, 2]


def test_worker_log_lines_have_time_level_and_the_status_once(
    explained: Path, tmp_path: Path, judge: FakeServer, capfd: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(explained, run)
    judge.script(*[Action(status=503, body="<html>busy</html>")] * 2)
    cfg = served(run, judge, **{"score.workers": 2, "llm.max_attempts": 1})
    score(run, cfg, scorers=["detection"], latents=range(8), progress=False)
    lines = [ln for ln in capfd.readouterr().err.splitlines() if "llm request failed" in ln]
    assert lines, "no worker logged the failed request"
    for line in lines:
        assert re.match(r"^\d\d:\d\d:\d\d WARNING worker-\d autointerp\.llm\.client: ", line), line
        assert line.count("503") == 1, line
