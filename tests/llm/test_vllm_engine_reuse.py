"""One in-process vLLM engine per model and settings per process: explain then score (as
``autointerp run`` / ``autointerp demo`` run them) load the model once. The engine is a fake
(``Engine._build`` replaced) that answers through the scripted judge, so no model is needed;
the registry, the engine thread and the stages are the real ones."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ helpers

from scripted_judge import ScriptedJudge  # noqa: E402
from stage_helpers import synthetic_run  # noqa: E402

from autointerp.config import load_config  # noqa: E402
from autointerp.llm import vllm_backend  # noqa: E402
from autointerp.pipeline import run_pipeline  # noqa: E402

N_LAT = 4


class FakeLLM:
    """What the engine thread uses of ``vllm.LLM``: enqueue, step, has_unfinished_requests."""

    def __init__(self, judge: ScriptedJudge) -> None:
        self.judge = judge
        self.llm_engine = self
        self.engine_core = self  # Engine._shutdown: llm.llm_engine.engine_core.shutdown()
        self.closed = False
        self.pending: list[tuple[str, str]] = []
        self.served = 0

    def enqueue_chat(self, convs: list[Any], params: list[Any], **_: Any) -> list[str]:
        ids = []
        for conv in convs:
            self.served += 1
            rid = str(self.served)
            self.pending.append((rid, self.judge({"messages": conv})))
            ids.append(f"{rid}-0a1b2c3d")  # vLLM's internal id: ours + a random suffix
        return ids

    def enqueue(self, prompts: list[str], params: list[Any], **_: Any) -> list[str]:
        raise AssertionError("these scorers send chats only")

    def has_unfinished_requests(self) -> bool:
        return bool(self.pending)

    def step(self) -> list[Any]:
        done, self.pending = self.pending, []
        return [
            SimpleNamespace(
                finished=True,
                request_id=rid,
                prompt_token_ids=[1, 2, 3],
                prompt_logprobs=None,
                outputs=[
                    SimpleNamespace(text=text, finish_reason="stop", token_ids=[7], logprobs=None)
                ],
            )
            for rid, text in done
        ]

    def shutdown(self) -> None:
        self.closed = True


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, FakeLLM]]]:
    """Every engine built, as (its settings' max_model_len and model, the fake)."""
    built: list[tuple[str, FakeLLM]] = []
    judge = ScriptedJudge()

    def fake_build(self: vllm_backend.Engine) -> FakeLLM:
        llm = FakeLLM(judge)
        built.append((f"{self.model}@{self._cfg.max_model_len}", llm))
        return llm

    monkeypatch.setattr(vllm_backend.Engine, "_build", fake_build)
    monkeypatch.setattr(vllm_backend.Engine, "_sampling", staticmethod(lambda request: None))
    vllm_backend.close_engines()
    yield built
    vllm_backend.close_engines()


def _config(run: Path, model: Path, max_model_len: int = 2048) -> Any:
    return load_config(
        None,
        {
            "run_dir": str(run),
            "llm.model": f"vllm:{model}",
            "llm.vllm.max_model_len": max_model_len,
            "llm.cache": False,  # every stage below sends its requests
            "score.scorers": ["detection", "fuzzing"],
            "score.detection.format": "batch",  # the scripted judge's format
            "score.fuzzing.format": "batch",
        },
    )


def test_explain_and_score_share_one_engine(
    tmp_path: Path, builds: list[tuple[str, FakeLLM]]
) -> None:
    run = synthetic_run(tmp_path / "run", N_LAT)
    model = tmp_path / "model"
    model.mkdir()
    run_pipeline(_config(run, model), stages=["explain", "score"], progress=False)
    assert [k for k, _ in builds] == [f"{model}@2048"]  # one load for both stages
    expl = pl.read_parquet(run / "explanations.parquet")
    ok = expl.filter(pl.col("status") == "ok")
    assert expl.height == N_LAT and ok.height > 0 and set(expl["status"]) <= {"ok", "skipped"}
    for scorer in ("detection", "fuzzing"):
        scores = pl.read_parquet(next((run / "scores").rglob(f"{scorer}.parquet")))
        scored = scores.filter(pl.col("status") == "ok")["latent"].sort().to_list()
        assert scored == ok["latent"].sort().to_list()  # every explained latent, judged
    llm = builds[0][1]
    assert llm.served == len(llm.judge.seen) > ok.height  # every request went to this engine
    assert {t for t, _ in llm.judge.seen} == {"explain", "detection", "fuzzing"}
    assert not llm.closed  # kept loaded after the stages, for the next one

    # other settings: an engine of their own; the idle one is closed first (its memory)
    shutil.rmtree(run / "scores")
    (run / "explanations.parquet").unlink()
    run_pipeline(_config(run, model, 1024), stages=["explain"], progress=False)
    assert [k for k, _ in builds] == [f"{model}@2048", f"{model}@1024"]
    assert builds[0][1].closed and not builds[1][1].closed
    # the same settings again (a new process's stage would load it; this one reuses it)
    run_pipeline(_config(run, model, 1024), stages=["score"], progress=False)
    assert len(builds) == 2 and builds[1][1].served > 0
    vllm_backend.close_engines()  # the library call that gives the memory back
    assert builds[1][1].closed
