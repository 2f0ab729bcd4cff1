"""Estimates, the cost cap and actual-vs-estimate, against the fake OpenAI-compatible server
(the requests the server receives are the reference the estimate must match)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from fake_server import FakeServer
from llm_helpers import SECRET
from scripted_judge import ScriptedJudge
from stage_helpers import copy_run, served, synthetic_run
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.cost import BudgetExceeded, estimate
from autointerp.explainers.run import explain
from autointerp.llm.tokens import MESSAGE_OVERHEAD, REPLY_OVERHEAD, TokenCounter
from autointerp.llm.types import ChatMessage, LLMRequest
from autointerp.pipeline import run_pipeline
from autointerp.scorers.run import score

N_LAT = 20
COUNTER = TokenCounter()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_run(tmp_path_factory.mktemp("base"), N_LAT)


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    return copy_run(base_run, tmp_path)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    srv = FakeServer(responder=ScriptedJudge(record=False)).start()
    yield srv
    srv.stop()


def _sent(server: FakeServer, stage: str | None = None) -> list[LLMRequest]:
    out = []
    for r in server.requests:
        if not r["path"].endswith("/chat/completions"):
            continue
        msgs = r["body"]["messages"]
        is_explain = "You describe one feature" in msgs[0]["content"]
        if stage is None or (stage == "explain") == is_explain:
            out.append(LLMRequest(messages=[ChatMessage(**m) for m in msgs]))
    return out


def test_approximate_counter_formula() -> None:
    req = LLMRequest(
        messages=[
            ChatMessage(role="system", content="x" * 10),
            ChatMessage(role="user", content="y"),
        ]
    )
    assert COUNTER.prompt(req) == 3 + MESSAGE_OVERHEAD + 1 + MESSAGE_OVERHEAD + REPLY_OVERHEAD


def test_estimate_matches_what_the_server_receives(run: Path, server: FakeServer) -> None:
    cfg = served(run, server, **{"score.scorers": ["detection", "fuzzing"]})
    est = estimate(run, cfg, sample=N_LAT, counter=COUNTER)
    assert server.hits == 0  # an estimate sends nothing
    assert est.latents == est.latents_sampled == N_LAT
    explain(run, cfg, progress=False)
    score(run, cfg, progress=False)
    explain_sent = _sent(server, "explain")
    all_sent = _sent(server)
    # explain prompts depend on nothing the model answers: exact
    assert est.stages["explain"].requests == len(explain_sent)
    assert est.stages["explain"].prompt_tokens == sum(COUNTER.prompt(r) for r in explain_sent)
    # score prompts hold the explanation (the baseline's in the estimate): within 5%
    assert est.total.requests == len(all_sent)
    actual = sum(COUNTER.prompt(r) for r in all_sent)
    assert abs(est.total.prompt_tokens - actual) / actual < 0.05
    # dollars at the dated price of gpt-4o-mini (0.15 / 0.60 per 1M tokens)
    s = est.stages["explain"]
    assert s.cost_usd == pytest.approx((s.prompt_tokens * 0.15 + s.completion_tokens * 0.6) / 1e6)
    assert est.total.cost_usd_ci == pytest.approx((est.total.cost_usd, est.total.cost_usd))


def test_sampled_estimate_extrapolates_with_an_interval(run: Path, server: FakeServer) -> None:
    cfg = served(run, server)
    full = estimate(run, cfg, stages=["explain"], sample=N_LAT, counter=COUNTER)
    part = estimate(run, cfg, stages=["explain"], sample=8, counter=COUNTER)
    assert part.latents_sampled == 8 and part.latents == N_LAT
    lo, hi = part.total.cost_usd_ci
    assert lo < part.total.cost_usd < hi
    assert lo <= full.total.cost_usd <= hi
    assert part.total.requests == pytest.approx(full.total.requests, rel=0.25)


def test_answered_requests_are_free(run: Path, server: FakeServer) -> None:
    cfg = served(run, server)
    explain(run, cfg, progress=False)
    hits = server.hits
    est = estimate(run, cfg, stages=["explain"], counter=COUNTER)
    assert server.hits == hits
    s = est.stages["explain"]
    assert s.cached_requests == s.requests > 0
    assert s.prompt_tokens == 0 and s.cost_usd == 0.0


def test_cost_cap_stops_before_the_first_request(run: Path, server: FakeServer) -> None:
    cfg = served(run, server, **{"llm.max_cost_usd": 1e-6})
    with pytest.raises(BudgetExceeded, match=r"exceeds llm.max_cost_usd=\$0.00"):
        explain(run, cfg, progress=False)
    with pytest.raises(BudgetExceeded, match="llm.max_cost_usd"):
        run_pipeline(cfg, ["explain", "score"], progress=False)
    assert server.hits == 0
    assert not (run / "explanations.parquet").exists()
    # the CLI: one line naming the setting, exit code 2
    conf = run / "capped.yaml"
    conf.write_text(json.dumps({"llm": cfg.llm.model_dump(mode="json", exclude={"prices"})}))
    res = CliRunner().invoke(app, ["explain", str(run), "--config", str(conf), "--no-progress"])
    assert res.exit_code == 2, res.output
    assert "llm.max_cost_usd" in res.output and server.hits == 0


def test_spend_is_reported_against_the_estimate(run: Path, server: FakeServer) -> None:
    cfg = served(run, server, **{"llm.max_cost_usd": 100.0, "score.scorers": ["detection"]})
    run_pipeline(cfg, ["explain", "score"], progress=False)
    saved = json.loads((run / "estimate.json").read_text())
    lines = [json.loads(x) for x in (run / "llm_usage.jsonl").read_text().splitlines()]
    assert [u["stage"] for u in lines] == ["explain", "score"]
    for u in lines:
        parts = [v for k, v in saved["stages"].items() if k.split(":")[0] == u["stage"]]
        assert u["estimated_cost_usd"] == pytest.approx(sum(p["cost_usd"] for p in parts))
        assert u["estimated_requests"] == sum(p["requests"] for p in parts) == u["requests"]
        assert u["cost_usd"] > 0


def test_cli_estimate_and_dry_run_send_nothing(run: Path, server: FakeServer) -> None:
    cfg = served(run, server)
    conf = run / "run.yaml"
    body = {"run_dir": str(run), "llm": cfg.llm.model_dump(mode="json", exclude={"prices"})}
    conf.write_text(json.dumps(body))
    res = CliRunner().invoke(app, ["estimate", str(conf), "--json", "--no-progress"])
    assert res.exit_code == 0, res.output
    est = json.loads(res.output.strip().splitlines()[-1])
    assert est["latents"] == N_LAT and est["total"]["requests"] > 0
    assert set(est["stages"]) == {"explain", "score:detection", "score:fuzzing"}
    res = CliRunner().invoke(app, ["explain", str(run), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "total" in res.output and "prices of 2025-06-01" in res.output
    explain(run, cfg, progress=False)
    hits = server.hits
    res = CliRunner().invoke(app, ["score", str(run), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert server.hits == hits
    assert not (run / "scores").exists() or not list((run / "scores").glob("*.parquet"))
    assert pl.read_parquet(run / "explanations.parquet").height > 0


def _answer_offline(server: FakeServer, requests: Path, outputs: Path) -> None:
    """What `vllm run-batch` writes: one output line per request line, the answer as the
    server's responder gives it (here the scripted judge)."""
    from fake_server import completion_body

    with outputs.open("w") as f:
        for i, line in enumerate(requests.read_text().splitlines()):
            d = json.loads(line)
            body = completion_body(d["body"], server.responder(d["body"]), True)
            resp = {"status_code": 200, "request_id": f"q{i}", "body": body}
            f.write(json.dumps({"id": f"r{i}", "custom_id": d["custom_id"], "response": resp}))
            f.write("\n")


def test_offline_batch_round_trip(run: Path, server: FakeServer) -> None:
    """estimate --write-batch -> (vllm run-batch) -> import-batch -> the stage sends nothing."""
    cfg = served(run, server)
    conf = run / "run.yaml"
    body = {"run_dir": str(run), "llm": cfg.llm.model_dump(mode="json", exclude={"prices"})}
    conf.write_text(json.dumps(body))
    reqs, outs = run / "explain.requests.jsonl", run / "explain.outputs.jsonl"
    args = ["estimate", str(conf), "--stages", "explain", "--write-batch", str(reqs)]
    res = CliRunner().invoke(app, [*args, "--sample", "3", "--no-progress"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in reqs.read_text().splitlines()]
    assert len(lines) == len({x["custom_id"] for x in lines}) > 3  # every latent, not a sample
    assert server.hits == 0
    _answer_offline(server, reqs, outs)
    res = CliRunner().invoke(app, ["import-batch", str(run), str(outs), "-i", str(reqs)])
    assert res.exit_code == 0, res.output
    assert f"{len(lines)} answers imported" in res.output
    explain(run, cfg, progress=False)
    assert server.hits == 0  # every answer came from the imported batch
    expl = pl.read_parquet(run / "explanations.parquet")
    assert expl["error"].is_null().sum() == len(lines)
    assert expl["explanation"].str.starts_with('the token "').sum() == len(lines)


def test_wall_time_from_rate_limits_and_no_throttled_dry_run(run: Path, server: FakeServer) -> None:
    """One request a minute: the dry run is not held back by it (it sends nothing); the wall
    time is the requests / rpm or tokens / tpm, whichever binds."""
    import time

    cfg = served(run, server, **{"llm.requests_per_minute": 1, "llm.tokens_per_minute": 1e9})
    t0 = time.monotonic()
    est = estimate(run, cfg, stages=["explain"], counter=COUNTER)
    assert time.monotonic() - t0 < 60
    s = est.stages["explain"]
    assert s.wall_s == pytest.approx(s.requests * 60.0)
    cfg = served(run, server, **{"llm.tokens_per_minute": 1000})
    s = estimate(run, cfg, stages=["explain"], counter=COUNTER).stages["explain"]
    assert s.wall_s == pytest.approx((s.prompt_tokens + s.completion_tokens) / 1000 * 60.0)


def test_judge_prompts_share_everything_but_the_explanation(run: Path) -> None:
    """Prefix-cache layout: scoring a latent with two explanations sends prompts identical up
    to the explanation, which comes last (instructions, then windows, then explanation)."""
    from autointerp.config import load_config
    from autointerp.llm.dry import recording

    cfg = load_config(None, {"run_dir": str(run), "score.scorers": ["detection", "fuzzing"]})
    explain(run, cfg, progress=False)
    first = pl.read_parquet(run / "explanations.parquet").filter(pl.col("status") == "ok")
    other = first.with_columns(
        pl.lit('the token "zzz"').alias("explanation"),
        (pl.col("explanation_id") + "-b").alias("explanation_id"),
    )
    sent = {}
    for name, expl in (("a", first), ("b", other)):
        with recording() as rec:
            score(run, cfg, explanations=expl, progress=False)
        sent[name] = [r.request for r in rec.requests.values()]
    assert len(sent["a"]) == len(sent["b"]) > 0

    def key(r: LLMRequest) -> tuple[str, str, str]:
        user = r.messages[-1].content  # type: ignore[index]
        return (str(r.tags["stage"]), str(r.tags["latent"]), user.rsplit("\n\nDescription: ")[0])

    a = {key(r): r for r in sent["a"]}
    b = {key(r): r for r in sent["b"]}
    assert a.keys() == b.keys()  # the same windows, in the same prompts and order
    for k, ra in a.items():
        ua, ub = ra.messages[-1].content, b[k].messages[-1].content  # type: ignore[index]
        assert ra.messages[0] == b[k].messages[0]  # same instructions
        assert ua.startswith(k[2]) and ub.startswith(k[2])
        assert ub.endswith('Description: the token "zzz"') and not ua.endswith('"zzz"')


def test_unpriced_local_server_is_free_and_unpriced_api_says_so(run: Path, server) -> None:
    from autointerp.cost import format_estimate

    cfg = served(run, server, **{"llm.model": "openai:my-served-model"})  # on 127.0.0.1
    est = estimate(run, cfg, stages=["explain"], sample=4, counter=COUNTER)
    assert est.local and est.total.cost_usd == 0 and est.total.prompt_tokens > 0
    assert "free (a model on this machine)" in "\n".join(format_estimate(est))
    cfg = served(run, server, **{"llm.model": "openai:unpriced", "llm.base_url": None})
    est = estimate(run, cfg, stages=["explain"], sample=4, counter=COUNTER)
    assert not est.local and est.price is None and est.total.cost_usd == 0
    assert "NO PRICE (set llm.prices)" in "\n".join(format_estimate(est))


def test_rescore_dry_run_estimates_the_imported_rows(run: Path, server: FakeServer) -> None:
    cfg = served(run, server)
    (run / "run.yaml").write_text(
        json.dumps(
            {"run_dir": str(run), "llm": cfg.llm.model_dump(mode="json", exclude={"prices"})}
        )
    )
    table = run / "theirs.csv"
    pl.DataFrame({"latent": [0, 1, 2], "explanation": ['"a"', '"b"', '"c"']}).write_csv(table)
    res = CliRunner().invoke(app, ["rescore", str(run), "-e", str(table), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "3 latents (3 sampled" in res.output and "score:detection" in res.output
    assert server.hits == 0 and not (run / "imported_explanations.parquet").exists()
