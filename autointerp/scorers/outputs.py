"""The score stage's two tables per scorer: ``scores/<scorer>.parquet`` (one row per latent and
explanation) and ``scores/<scorer>.examples.parquet`` (one row per example); columns in
docs/score.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from autointerp.runner.table import PartTable
from autointerp.scorers.base import SCORE_SCHEMA, Scorer, ScoreResult
from autointerp.scorers.registry import SCORERS

KEY = ["hookpoint", "latent", "explanation_id", "explanation_set", "config_hash"]
Explanation = dict[str, Any]


def scores_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "scores"


def set_of(e: Explanation) -> str:
    """The explanation set of an explanation row (``explanation_set``; rows written before
    the column existed: their explainer and config hash)."""
    return e.get("explanation_set") or f"{e.get('explainer')}:{e.get('config_hash')}"


def _score_row(e: Explanation, scorer: Scorer, chash: str, res: ScoreResult) -> dict[str, Any]:
    t = res.tally
    return {
        "hookpoint": e["hookpoint"],
        "latent": int(e["latent"]),
        "explanation_id": e["explanation_id"],
        "explanation_set": set_of(e),
        "config_hash": chash,
        "scorer": scorer.name,
        "explainer": e.get("explainer"),
        "explanation": e.get("explanation"),
        "status": res.status,
        "error": res.error,
        "model": scorer.model,
        "judge_endpoint": scorer.judge_endpoint,
        "scorer_config": scorer.scorer_config(),
        "n_examples": res.n_examples,
        "n_lost": res.n_lost,
        "n_requests": t.requests,
        "n_failed_requests": t.failed,
        "n_cached_requests": t.cached,
        "n_truncated_requests": t.truncated,
        "prompt_tokens": t.prompt_tokens,
        "completion_tokens": t.completion_tokens,
        "cost_usd": t.cost_usd,
        "latency_s": t.latency_s,
        # a latent that got no number has every metric column NaN, chance levels included
        **{
            k: float(v)
            for k, v in (
                res.metrics if res.status == "ok" and res.metrics else scorer.empty_metrics()
            ).items()
        },
    }


class ScoreOutputs:
    """The two tables of each scorer."""

    def __init__(self, run_dir: Path, names: list[str], flush_rows: int) -> None:
        d = scores_dir(run_dir)
        self.latent = {
            n: PartTable(d / f"{n}.parquet", KEY, SCORE_SCHEMA, flush_rows=flush_rows)
            for n in names
        }
        self.examples = {
            n: PartTable(
                d / f"{n}.examples.parquet",
                KEY,
                SCORERS[n].example_schema,
                sort=False,
                flush_rows=flush_rows * 50,
            )
            for n in names
        }

    def done(self, name: str) -> tuple[set[tuple[Any, ...]], set[tuple[Any, ...]]]:
        """(keys not to score again, every key written): failed rows are scored again."""
        t = self.latent[name]
        return t.done_keys(redo_status="failed"), t.done_keys()

    def add(self, scorer: Scorer, chash: str, e: Explanation, res: ScoreResult) -> None:
        self.latent[scorer.name].add([_score_row(e, scorer, chash, res)])
        if res.examples:
            key = {k: e[k] for k in ("hookpoint", "latent", "explanation_id")}
            key["explanation_set"] = set_of(e)
            key["config_hash"] = chash
            self.examples[scorer.name].add(res.examples, common=key)

    def flush(self) -> None:
        for t in (*self.latent.values(), *self.examples.values()):
            t.flush()

    def close(self) -> dict[str, Path]:
        out = {}
        for name, t in self.latent.items():
            path = t.close()
            self.examples[name].close()
            if path is not None:
                out[name] = path
        return out
