"""Prompt tokens per latent of explain + detection + fuzzing (+ simulation) at default
settings, counted with the demo tokenizer (not a timed test).

Builds a demo run (bundled model + SAE over the stdlib text) unless ``--run-dir`` points at a
sampled one, explains and scores ``--latents`` latents with the offline lexical backend (the
prompts are exactly those an LLM would get), records every request, and counts its tokens:
chat messages as their contents plus 4 tokens per message (a chat template's overhead).
``shared_prefix`` is the share of prompt tokens equal to a prefix of the previous request of
the same kind (what vLLM's prefix cache reuses when requests stream in order). Then explains
the same latents with the ``iterative`` explainer and counts its requests (explain, detection
on held-back train windows, detection on selection) per round (``iterative_*``). Then the
cost keys of issue 17 (scripts/prompt_cost_extras.py: uncached tokens with a real chat
tokenizer, best-of-5 and rescore shared-prefix fractions, estimate error, batch resubmissions
after a kill). Prints, as its LAST line, one JSON object.

With delphi installed (bench-only: ``pip install --no-deps eai-delphi==0.1.3``), delphi's
default explainer, detection and fuzzing prompts are rendered from its package on the SAME
latents' windows and explanations (scripts/delphi_prompts.py) and counted with the same
tokenizer and per-message overhead (``delphi_*``, ``ours_to_delphi``); ``--no-delphi`` skips.

    python scripts/bench_prompt_cost.py --latents 200 [--examples-per-prompt 10]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from autointerp.config import DEMO_MODEL, load_config
from autointerp.llm.client import LLMClient
from autointerp.llm.types import LLMRequest

MSG_OVERHEAD = 4
RECORDED: list[LLMRequest] = []


def record() -> None:
    original = LLMClient.generate

    async def generate(self: LLMClient, request: LLMRequest):  # type: ignore[no-untyped-def]
        RECORDED.append(request)
        return await original(self, request)

    LLMClient.generate = generate  # type: ignore[method-assign]


def ensure_run(run_dir: Path, n_tokens: int) -> None:
    if (run_dir / "examples").is_dir():
        return
    from autointerp.cache import cache_activations
    from autointerp.sampling.build import build_examples

    cfg = load_config(None, {"run_dir": str(run_dir), "cache.n_tokens": n_tokens})
    cache_activations(cfg, progress=False)
    build_examples(run_dir, cfg, progress=False)


def full_latents(run: Path, cfg, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    """The first ``n`` latents whose test split holds the full default mix (100 windows)."""
    import polars as pl

    want = cfg.sample.test.n_activating + cfg.sample.test.n_contrast
    counts = (
        pl.scan_parquet(run / "examples" / "model.layers.1.parquet")
        .filter(pl.col("split") == "test")
        .group_by("latent")
        .len()
        .filter(pl.col("len") == want)
        .sort("latent")
        .collect()
    )
    return counts["latent"].head(n).to_list()


def token_ids(tok, request: LLMRequest) -> list[int]:  # type: ignore[no-untyped-def]
    if request.messages:
        ids: list[int] = []
        for m in request.messages:
            ids += tok(m.content, add_special_tokens=False)["input_ids"] + [0] * MSG_OVERHEAD
        return ids
    return tok(request.prompt or "", add_special_tokens=False)["input_ids"]


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n]), np.asarray(b[:n])
    diff = np.flatnonzero(x != y)
    return int(diff[0]) if len(diff) else n


def cost_keys(run: Path, latents: list[int], main_requests: list[LLMRequest], n: int) -> dict:
    """Issue 17's keys (scripts/prompt_cost_extras.py), each on a fresh copy of the run."""
    import prompt_cost_extras as extras

    def fresh(name: str) -> Path:
        dst = run.parent / name
        dst.mkdir()
        for sub in ("examples", "cache"):
            (dst / sub).symlink_to((run / sub).resolve())
        return dst

    tok, tok_name = extras.chat_tokenizer()
    out: dict[str, object] = {"chat_tokenizer": tok_name}
    out.update(extras.uncached_per_latent(main_requests, n, tok))
    out.update(extras.shared_prefix_keys(fresh("bestofk"), latents[:50], tok))
    out.update(extras.estimate_error_key(fresh("estimate"), latents, tok))
    out.update(extras.batch_kill_key(fresh("batch"), latents[:40]))
    return out


def message_tokens(tok, messages: list[dict[str, str]]) -> int:  # type: ignore[no-untyped-def]
    """Tokens of chat messages, counted as ``token_ids`` counts ours."""
    return sum(
        len(tok(m["content"], add_special_tokens=False)["input_ids"]) + MSG_OVERHEAD
        for m in messages
    )


def delphi_costs(delphi, run: Path, cfg, latents: list[int], tok) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """delphi's explain / detection / fuzzing prompt tokens per latent on our windows, with our
    selected explanation of each latent as the one its scorers test."""
    import polars as pl

    from autointerp.runner.examples import iter_latent_examples
    from autointerp.text import vocab_for

    expl = pl.read_parquet(run / "explanations.parquet").filter(
        pl.col("selected") & (pl.col("explainer") == cfg.explain.explainer)
    )
    text = dict(zip(expl["latent"], expl["explanation"], strict=True))
    vocab = vocab_for(cfg.subject.model)
    totals = {"explain": 0, "detection": 0, "fuzzing": 0}
    requests = dict.fromkeys(totals, 0)
    n_train = 0
    for ex in iter_latent_examples(run, "model.layers.1", vocab, ("train", "test"), latents):
        train = ex.windows("train", "activating")
        active, silent = ex.windows("test", "activating"), ex.windows("test", "contrast")
        n_train += min(len(train), 40)
        e = text.get(ex.latent) or ""
        prompts = {
            "explain": [delphi.explain(train)],
            "detection": delphi.detection(e, active, silent),
            "fuzzing": delphi.fuzzing(e, active, silent),
        }
        for kind, msgs in prompts.items():
            totals[kind] += sum(message_tokens(tok, m) for m in msgs)
            requests[kind] += len(msgs)
    n = max(len(latents), 1)
    out: dict[str, float] = {}
    for kind in totals:
        out[f"delphi_{kind}_prompt_tokens_per_latent"] = round(totals[kind] / n, 1)
        out[f"delphi_{kind}_requests_per_latent"] = round(requests[kind] / n, 2)
    out["delphi_total_prompt_tokens_per_latent"] = round(sum(totals.values()) / n, 1)
    out["delphi_train_windows_per_latent"] = round(n_train / n, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=None, help="a sampled run (copied)")
    parser.add_argument("--latents", type=int, default=200)
    parser.add_argument("--n-tokens", type=int, default=262_144)
    parser.add_argument("--examples-per-prompt", type=int, default=None)
    parser.add_argument("--no-delphi", action="store_true", help="skip the delphi comparison")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    from autointerp.explainers.run import explain
    from autointerp.scorers.run import score

    record()
    delphi = None
    if not args.no_delphi:
        from delphi_prompts import Delphi

        delphi = Delphi()  # fails here, before any work, when delphi is missing
    tmp = Path(tempfile.mkdtemp(prefix="bench_prompt_cost_"))
    run = tmp / "run"
    if args.run_dir is not None:
        shutil.copytree(args.run_dir / "examples", run / "examples")
        shutil.copytree(
            args.run_dir / "cache", run / "cache", ignore=shutil.ignore_patterns("*.parquet")
        )
    else:
        ensure_run(run, args.n_tokens)
    overrides: dict[str, object] = {"run_dir": str(run)}
    if args.examples_per_prompt:
        for s in ("detection", "fuzzing"):
            overrides[f"score.{s}.examples_per_prompt"] = args.examples_per_prompt
    cfg = load_config(None, overrides)
    latents = full_latents(run, cfg, args.latents)
    explain(run, cfg, latents=latents, progress=False)
    score(run, cfg, scorers=["detection", "fuzzing", "simulation"], latents=latents, progress=False)
    n_main = len(RECORDED)
    # the iterative explainer on the same latents: every request of its rounds (explain,
    # detection on held-back train windows, detection on selection), by round
    iter_cfg = load_config(None, {**overrides, "explain.explainer": "iterative"})
    explain(run, iter_cfg, latents=latents, progress=False)
    tok = AutoTokenizer.from_pretrained(DEMO_MODEL, local_files_only=True)
    totals: dict[str, int] = defaultdict(int)
    shared: dict[str, int] = defaultdict(int)
    counts: dict[str, int] = defaultdict(int)
    previous: dict[str, list[int]] = {}
    latent_set = set()
    for req in RECORDED[:n_main]:
        kind = str(req.tags.get("stage", "?")).removeprefix("score:")
        latent_set.add(req.tags.get("latent"))
        ids = token_ids(tok, req)
        totals[kind] += len(ids)
        counts[kind] += 1
        if kind in previous:
            shared[kind] += common_prefix(previous[kind], ids)
        previous[kind] = ids
    n = len(latent_set)
    out: dict[str, object] = {"latents": n, "tokenizer": "demo (byte-level BPE, 4096)"}
    for kind in ("explain", "detection", "fuzzing", "simulation"):
        out[f"{kind}_prompt_tokens_per_latent"] = round(totals[kind] / n, 1)
        out[f"{kind}_requests_per_latent"] = round(counts[kind] / n, 2)
        out[f"{kind}_shared_prefix_fraction"] = round(shared[kind] / max(totals[kind], 1), 3)
    main3 = ("explain", "detection", "fuzzing")
    out["total_prompt_tokens_per_latent"] = round(sum(totals[k] for k in main3) / n, 1)
    out["total_shared_prefix_fraction"] = round(
        sum(shared[k] for k in main3) / max(sum(totals[k] for k in main3), 1), 3
    )
    out["examples_per_prompt"] = cfg.score.detection.examples_per_prompt
    out["test_windows_per_latent"] = cfg.sample.test.n_activating + cfg.sample.test.n_contrast
    by_round: dict[int, int] = defaultdict(int)
    for req in RECORDED[n_main:]:
        by_round[int(req.tags.get("round", -1))] += len(token_ids(tok, req))
    import polars as pl

    rows = pl.read_parquet(run / "explanations.parquet").filter(pl.col("explainer") == "iterative")
    out["iterative_prompt_tokens_per_latent"] = round(sum(by_round.values()) / n, 1)
    out["iterative_requests_per_latent"] = round(len(RECORDED[n_main:]) / n, 2)
    out["iterative_rounds_per_latent"] = round(rows.height / n, 2)
    out["iterative_prompt_tokens_per_round"] = {
        str(r): round(t / n, 1) for r, t in sorted(by_round.items())
    }
    out["iterative_selected_round_counts"] = {
        str(r): c
        for r, c in rows.filter(pl.col("selected"))["round"].value_counts().sort("round").rows()
    }
    test_windows = json.loads((run / "examples" / "model.layers.1.json").read_text())
    out["test_mix"] = test_windows.get("sample", {}).get("test")
    out.update(cost_keys(run, latents, RECORDED[:n_main], n))
    if delphi is not None:
        out.update(delphi_costs(delphi, run, cfg, latents, tok))
        ours = out["total_prompt_tokens_per_latent"]
        out["ours_to_delphi"] = round(ours / out["delphi_total_prompt_tokens_per_latent"], 3)
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
