"""Throughput of the embedding scorer (not a timed test).

Copies a demo run (examples + cache metadata), then scores one explanation per latent for
every latent with the embedding scorer: the first pass embeds every distinct test window (and
stores them under RUN_DIR/embeddings/), the second scores a different set of explanations for
the same latents, which reuses the stored window embeddings. The explanations are synthetic
phrases (throughput does not depend on what they say).

Prints, as its LAST line, one JSON object: ``windows`` (distinct test windows embedded),
``window_rows`` (test windows scored per pass, shared windows counted per latent),
``windows_per_s`` (embedding throughput), ``seconds`` (first pass), ``second_seconds``,
``reuse_speedup`` (first / second), ``second_pass_windows_embedded`` (must be 0).

    python scripts/bench_embedding.py --run-dir results/demo [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl
from bench_score import fresh_copy  # scripts/ is on sys.path when run as a script

from autointerp.config import load_config
from autointerp.embedding import Embedder
from autointerp.explainers.base import SCHEMA, explanation_id
from autointerp.runner.examples import all_latents, example_hookpoints
from autointerp.scorers.run import score

PHRASES_A = ("the keyword def", "numbers in code", "closing brackets", "English prose", "imports")
PHRASES_B = ("function names", "string quotes", "indentation", "comments", "class definitions")


def explanations(run: Path, phrases: tuple[str, ...], tag: str) -> pl.DataFrame:
    rows = []
    for hp in example_hookpoints(run):
        for latent in all_latents(run, hp).tolist():
            text = f"{phrases[latent % len(phrases)]} ({tag} {latent})"
            rows.append(
                {
                    "hookpoint": hp,
                    "latent": latent,
                    "explanation_id": explanation_id(text),
                    "explainer": f"bench:{tag}",
                    "candidate": 0,
                    "selected": True,
                    "status": "ok",
                    "explanation": text,
                    "config_hash": "bench",
                    "source": "bench",
                }
            )
    return pl.DataFrame(rows, schema={k: SCHEMA[k] for k in rows[0]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", type=Path, default=Path("results/demo"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not (args.run_dir / "examples").is_dir():
        raise SystemExit(f"no examples in {args.run_dir}: run `autointerp demo` first")
    tmp = Path(tempfile.mkdtemp(prefix="bench_embedding_"))
    run = fresh_copy(args.run_dir, tmp / "run")
    cfg = load_config(
        None,
        {
            "run_dir": str(run),
            "score.embedding.device": args.device,
            "score.embedding.batch_size": args.batch_size,
            "score.workers": 1,
        },
    )
    embed_s = {"s": 0.0, "windows": 0}
    original = Embedder.embed

    def timed(self: Embedder, texts, query: bool = False):
        t = time.perf_counter()
        out = original(self, texts, query)
        embed_s["s"] += time.perf_counter() - t
        embed_s["windows"] += 0 if query else len(texts)
        return out

    Embedder.embed = timed  # type: ignore[method-assign]
    first, second = explanations(run, PHRASES_A, "a"), explanations(run, PHRASES_B, "b")
    t0 = time.perf_counter()
    path = score(run, cfg, scorers=["embedding"], explanations=first, progress=False)["embedding"]
    t1 = time.perf_counter()
    windows, windows_s = embed_s["windows"], embed_s["s"]
    score(run, cfg, scorers=["embedding"], explanations=second, progress=False)
    t2 = time.perf_counter()
    scores = pl.read_parquet(path)
    rows = int(scores.filter(pl.col("explainer") == "bench:a")["n_examples"].sum())
    out = {
        "latents": first.height,
        "scored_ok": int((scores["status"] == "ok").sum()),
        "window_rows": rows,
        "embed_seconds": round(windows_s, 2),
        "second_seconds": round(t2 - t1, 2),
        "second_pass_windows_embedded": embed_s["windows"] - windows,
        "device": cfg.score.embedding.device,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0],
        "windows": windows,
        "windows_per_s": round(windows / windows_s, 1) if windows_s else None,
        "seconds": round(t1 - t0, 2),
        "reuse_speedup": round((t1 - t0) / (t2 - t1), 2),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
