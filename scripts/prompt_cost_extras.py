"""The cost keys of scripts/bench_prompt_cost.py (issue 17), each measured by one function:

- ``uncached_prompt_tokens_per_latent``: what an unbounded prefix cache with 16-token blocks
  (vLLM's automatic prefix caching) could not reuse from an earlier request, explain +
  detection + fuzzing in the order the pipeline sends them, counted with a real chat
  tokenizer and its chat template (one cache, as one server; also per scorer, and per part of
  the prompt: ``uncached_per_latent``);
- ``bestofk5_shared_prefix_fraction`` / ``rescore_shared_prefix_fraction``: the share of prompt
  tokens such a cache reuses for best-of-k (k = 5: candidates and their selection scoring) and
  for rescoring the same latents with other explanations after a first scoring;
- ``estimate_error``: |estimated - actual| / actual prompt tokens of explain + score on the
  latents against the fake OpenAI-compatible server (the estimate samples ``ESTIMATE_SAMPLE``
  of them and extrapolates);
- ``batch_requests_resubmitted_after_kill``: a batch explain run (subprocess) killed with
  SIGKILL once its jobs are submitted, then run again to the end: request lines submitted
  again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "llm"), str(ROOT / "tests")]

from fake_server import FakeServer  # noqa: E402
from scripted_judge import ScriptedJudge, default_explain  # noqa: E402

from autointerp.config import load_config  # noqa: E402
from autointerp.llm.tokens import TokenCounter  # noqa: E402
from autointerp.llm.types import ChatMessage, LLMRequest  # noqa: E402

BLOCK = 16
ESTIMATE_SAMPLE = 50
MODELS = Path.home() / ".cache" / "autointerp" / "models"
KEY_ENV = "BENCH_FAKE_KEY"


def chat_tokenizer() -> tuple[Any, str]:
    """Qwen2.5-Coder-1.5B-Instruct's tokenizer when converted locally, else SmolLM2-135M's,
    else the demo model's (no chat template: 4 tokens a message)."""
    from transformers import AutoTokenizer

    for name in ("qwen2.5-coder-1.5b-instruct", "smollm2-135m-instruct"):
        folder = MODELS / name / "hf"
        if (folder / "tokenizer.json").is_file() or (folder / "tokenizer_config.json").is_file():
            try:
                return AutoTokenizer.from_pretrained(folder, local_files_only=True), name
            except Exception:  # a conversion still being written
                continue
    from autointerp.config import DEMO_MODEL

    return AutoTokenizer.from_pretrained(DEMO_MODEL, local_files_only=True), "demo (no template)"


def cached_tokens(sequences: Iterable[list[int]]) -> tuple[int, int]:
    """(tokens, tokens a prefix cache of full ``BLOCK``-token blocks reuses), in order."""
    seen: set[bytes] = set()
    total = reused = 0
    for ids in sequences:
        total += len(ids)
        reused += sum(_reuse(ids, seen))
    return total, reused


def as_request(body: dict[str, Any]) -> LLMRequest:
    return LLMRequest(messages=[ChatMessage(**m) for m in body["messages"]])


def kind_of(body: dict[str, Any]) -> str:
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "You describe one feature" in system:
        return "explain"
    if "You test a description" in system:
        return "fuzzing" if "\n\nMarked:\n" in user else "detection"
    return "other"


def _part_labels(request: LLMRequest, text: str) -> list[str]:
    """Per character of a chat prompt rendered by its template: which part of the prompt it
    is (``template``: the chat template's own markers; ``instructions``: system text, few-shot
    turns, headers such as ``Description:``; ``window_text``; ``numbering`` (``N.`` lines and
    the blank lines between windows); ``markup`` (``<<``/``>>``); ``marks`` (fuzzing's list of
    marked tokens); ``explanation``)."""
    labels = ["template"] * len(text)
    stage = str(request.tags.get("stage", "?")).removeprefix("score:")
    messages = request.messages or []
    pos = 0

    def put(start: int, end: int, label: str) -> None:
        labels[start:end] = [label] * (end - start)

    for i, m in enumerate(messages):
        at = text.find(m.content, pos)
        if at < 0:
            continue
        end = at + len(m.content)
        pos = end
        if m.role != "user" or i < len(messages) - 1:
            put(at, end, "instructions")  # system text, few-shot turns
            continue
        put(at, end, "window_text")
        c = m.content
        for rx, label in (
            (r"(?m)^\d+\.\n|\n\n", "numbering"),
            (r"<<|>>", "markup"),
            (r"\n\nMarked:\n[\s\S]*?(?=\n\nDescription: )", "marks"),  # linear
            (r"Active in:\n\n|\n\nSilent in:\n\n|\n\nMarked:\n|\n\nDescription: ", "instructions"),
        ):
            for hit in re.finditer(rx, c):
                put(at + hit.start(), at + hit.end(), label)
        explanation = (request.task or {}).get("explanation")
        if explanation and stage != "explain" and c.endswith(explanation):
            put(end - len(explanation), end, "explanation")
    return labels


def _reuse(ids: list[int], seen: set[bytes]) -> list[bool]:
    """Per token: reused from ``seen`` (full ``BLOCK``-token blocks of a hash chain from the
    first token, as vLLM's automatic prefix caching); ``seen`` gains this prompt's blocks."""
    out = [False] * len(ids)
    h = hashlib.blake2b(digest_size=16)
    hit = True
    for start in range(0, len(ids) - len(ids) % BLOCK, BLOCK):
        h.update(json.dumps(ids[start : start + BLOCK]).encode())
        key = h.digest()
        if hit and key in seen:
            out[start : start + BLOCK] = [True] * BLOCK
        else:
            hit = False
            seen.add(key)
    return out


def uncached_per_latent(requests: list[LLMRequest], n_latents: int, tok: Any) -> dict[str, Any]:
    """Uncached prompt tokens of explain + detection + fuzzing, in the order sent, two ways:

    - ``uncached_prompt_tokens_per_latent``: ONE cache for every request, as one vLLM server
      holds one cache (explain and score share no 16-token block, so this is also one cache
      per pipeline stage: explain, score); a latent's detection and fuzzing prompts, sent
      together by the score stage, reuse each other's blocks. Per stage and per part of the
      prompt: ``uncached_<stage>_tokens_per_latent``, ``uncached_parts_per_latent``;
    - ``uncached_prompt_tokens_per_latent_per_scorer``: one cache per scorer (a fuzzing prompt
      reuses only fuzzing prompts), the definition of the first measurement."""
    counter = TokenCounter(tok)
    sent: list[tuple[str, LLMRequest, list[int]]] = []
    for r in requests:
        stage = str(r.tags.get("stage", "?")).removeprefix("score:")
        if stage in ("explain", "detection", "fuzzing"):
            sent.append((stage, r, counter.prompt_ids(r) or []))
    one: set[bytes] = set()
    apart: dict[str, set[bytes]] = defaultdict(set)
    total = uncached = uncached_apart = 0
    by_stage: dict[str, int] = defaultdict(int)
    parts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    exact = getattr(tok, "chat_template", None) is not None
    for stage, r, ids in sent:
        reused = _reuse(ids, one)
        missed = reused.count(False)
        total += len(ids)
        uncached += missed
        by_stage[stage] += missed
        uncached_apart += _reuse(ids, apart[stage]).count(False)
        if exact:
            msgs = [{"role": m.role, "content": m.content} for m in r.messages or []]
            text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            if list(enc["input_ids"]) != ids:
                exact = False  # the template's text does not re-tokenize to its ids
                continue
            labels = _part_labels(r, text)
            for (a, _), hit in zip(enc["offset_mapping"], reused, strict=True):
                if not hit:
                    parts[stage][labels[a] if a < len(labels) else "template"] += 1
    out: dict[str, Any] = {
        f"uncached_{stage}_tokens_per_latent": round(v / n_latents, 1)
        for stage, v in sorted(by_stage.items())
    }
    if exact:
        out["uncached_parts_per_latent"] = {
            stage: {k: round(v / n_latents, 1) for k, v in sorted(p.items(), key=lambda x: -x[1])}
            for stage, p in sorted(parts.items())
        }
    out["chat_prompt_tokens_per_latent"] = round(total / n_latents, 1)
    out["uncached_prompt_tokens_per_latent"] = round(uncached / n_latents, 1)
    out["uncached_prompt_tokens_per_latent_per_scorer"] = round(uncached_apart / n_latents, 1)
    return out


class VariedJudge(ScriptedJudge):
    """The scripted judge whose explanations differ per sampled candidate (a real model at
    temperature > 0 writes k different texts): the request's seed picks a variant."""

    def __call__(self, body: dict[str, Any]) -> str:
        system = (body.get("messages") or [{}])[0].get("content", "")
        if "You describe one feature" in system and body.get("seed") is not None:
            user = body["messages"][-1]["content"]
            text = default_explain(user) + f" (variant {int(body['seed']) % 1000})"
            return json.dumps({"explanation": text})
        return super().__call__(body)


def served(run: Path, server: FakeServer, **extra: Any):  # type: ignore[no-untyped-def]
    return load_config(
        None,
        {
            "run_dir": str(run),
            "llm.model": "openai:gpt-4o-mini",
            "llm.base_url": server.base_url,
            "llm.api_key_env": KEY_ENV,
            "llm.concurrency": 16,
            "score.workers": 1,
            **extra,
        },
    )


def _chat_bodies(server: FakeServer, since: int = 0) -> list[dict[str, Any]]:
    return [
        r["body"]
        for r in server.requests[since:]
        if r["path"].endswith("/chat/completions") and r.get("body")
    ]


def shared_prefix_keys(run: Path, latents: list[int], tok: Any) -> dict[str, Any]:
    """Best-of-5 and rescoring against the fake server; cache reuse over the prompts sent."""
    import polars as pl

    from autointerp.explainers.run import explain
    from autointerp.scorers.run import score

    os.environ[KEY_ENV] = "sk-bench"
    server = FakeServer(responder=VariedJudge(record=False)).start()
    counter = TokenCounter(tok)
    out: dict[str, Any] = {}
    try:
        cfg = served(run, server, **{"explain.explainer": "best-of-k", "explain.k": 5})
        start = len(server.requests)
        explain(run, cfg, latents=latents, progress=False)
        bodies = _chat_bodies(server, start)
        t, reused = cached_tokens(counter.prompt_ids(as_request(b)) or [] for b in bodies)
        out["bestofk5_shared_prefix_fraction"] = round(reused / t, 3)
        scoring = [b for b in bodies if kind_of(b) == "detection"]
        ts, rs = cached_tokens(counter.prompt_ids(as_request(b)) or [] for b in scoring)
        out["bestofk5_selection_scoring_shared_prefix_fraction"] = round(rs / ts, 3)
        # rescoring: score the selected explanations, then other ones on the same windows
        cfg = served(run, server, **{"score.scorers": ["detection", "fuzzing"]})
        sel = pl.read_parquet(run / "explanations.parquet").filter(pl.col("selected"))
        start = len(server.requests)
        score(run, cfg, latents=latents, explanations=sel, progress=False)
        first = _chat_bodies(server, start)
        other = sel.with_columns(
            (pl.col("explanation") + " (rescored)").alias("explanation"),
            (pl.col("explanation_id") + "-r").alias("explanation_id"),
        )
        start = len(server.requests)
        score(run, cfg, latents=latents, explanations=other, progress=False)
        second = _chat_bodies(server, start)
        ids = [counter.prompt_ids(as_request(b)) or [] for b in first + second]
        t_all, r_all = cached_tokens(ids)
        t_first, r_first = cached_tokens(ids[: len(first)])
        out["rescore_shared_prefix_fraction"] = round((r_all - r_first) / (t_all - t_first), 3)
    finally:
        server.stop()
    return out


def estimate_error_key(run: Path, latents: list[int], tok: Any) -> dict[str, Any]:
    """Estimate (a sample of ``ESTIMATE_SAMPLE`` latents, extrapolated) vs the prompts the
    fake server then received for explain + score on all ``latents``; same counter."""
    from autointerp.cost import estimate
    from autointerp.explainers.run import explain
    from autointerp.scorers.run import score

    os.environ[KEY_ENV] = "sk-bench"
    server = FakeServer(responder=ScriptedJudge(record=False)).start()
    counter = TokenCounter(tok)
    try:
        cfg = served(run, server)
        t0 = time.perf_counter()
        est = estimate(run, cfg, latents=latents, sample=ESTIMATE_SAMPLE, counter=counter)
        est_s = time.perf_counter() - t0
        start = len(server.requests)
        explain(run, cfg, latents=latents, progress=False)
        score(run, cfg, latents=latents, progress=False)
        bodies = _chat_bodies(server, start)
        actual = sum(counter.prompt(as_request(b)) for b in bodies)
    finally:
        server.stop()
    return {
        "estimate_error": round(abs(est.total.prompt_tokens - actual) / actual, 4),
        "estimate_prompt_tokens": est.total.prompt_tokens,
        "actual_prompt_tokens": actual,
        "estimate_requests": est.total.requests,
        "actual_requests": len(bodies),
        "estimate_sample_latents": est.latents_sampled,
        "estimate_latents": est.latents,
        "estimate_cost_ci_relative": round(est.relative_error(), 4),
        "estimate_seconds": round(est_s, 1),
    }


def batch_kill_key(run: Path, latents: list[int]) -> dict[str, Any]:
    """Batch explain in a subprocess, SIGKILLed after its jobs are submitted, then rerun."""
    server = FakeServer(responder=ScriptedJudge(record=False)).start()
    server.batch.polls = 10**9  # jobs do not end while the first process lives
    env = {**os.environ, KEY_ENV: "sk-bench", "PYTHONPATH": str(ROOT)}
    lat = ",".join(map(str, latents))
    conf = run / "batch.yaml"
    llm = {
        "model": "openai:gpt-4o-mini",
        "base_url": server.base_url,
        "api_key_env": KEY_ENV,
        "batch": {
            "enabled": True,
            "poll_interval_s": 0.2,
            "flush_idle_s": 0.5,
            "max_enqueued_tokens": 20000,
        },
    }
    conf.write_text(json.dumps({"llm": llm}))  # JSON is YAML
    cmd = [
        sys.executable,
        "-c",
        "from autointerp.cli import app; app()",
        "explain",
        str(run),
        "--config",
        str(conf),
        "--latents",
        lat,
        "--no-progress",
    ]
    try:
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while not server.batch.jobs and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        time.sleep(1.0)  # the first jobs are recorded
        first.send_signal(signal.SIGKILL)
        first.wait()
        submitted = server.batch.lines_submitted
        jobs = len(server.batch.jobs)
        for bid in server.batch.polls_left:
            server.batch.polls_left[bid] = 1
        server.batch.polls = 1
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if second.returncode != 0:
            raise RuntimeError(second.stderr[-2000:])
        keys = []
        for job in server.batch.jobs.values():
            for line in server.batch.files[job["input_file_id"]].splitlines():
                keys.append(json.loads(line)["custom_id"])
    finally:
        server.stop()
    return {
        "batch_jobs_before_kill": jobs,
        "batch_requests_before_kill": submitted,
        "batch_requests_total": server.batch.lines_submitted,
        "batch_requests_resubmitted_after_kill": len(keys) - len(set(keys)),
    }
