"""Mutation check: would the tests notice if a scorer were broken the way that matters?

Each mutation applies ONE defect to the code under test (a monkeypatch at pytest start-up, see
``tests/conftest.py``; inert unless ``AUTOINTERP_MUTATION`` names a mutation) and runs the
tests chosen for it with ``-x``. A mutation is killed when a test fails while the defect was
active (the patched code records that it changed something; a mutation that never fired is
reported as ``inert``, never as killed). The unmutated tests run first and must pass. The list
and what kills each are in docs/mutations.md. LAST stdout line: one JSON object (``killed_by``:
the test that failed, per mutation).

    python scripts/mutation_check.py [--only NAME ...] [--list]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ENV = "AUTOINTERP_MUTATION"
HITS_ENV = "AUTOINTERP_MUTATION_HITS"
_fired: set[str] = set()


@dataclass(frozen=True)
class Mutation:
    what: str
    apply: Callable[[], None]
    tests: tuple[str, ...]


def fired() -> None:
    """Record (once per process) that the active mutation changed what the code did."""
    name = os.environ.get(ENV, "")
    if name in _fired:
        return
    _fired.add(name)
    path = os.environ.get(HITS_ENV)
    if path:
        with open(path, "a") as f:
            f.write(name + "\n")


def patch(module: str, attr: str, make: Callable[[Any], Any], everywhere: bool = True) -> None:
    """Replace ``module.attr`` by ``make(original)``, also (``everywhere``) where other loaded
    autointerp modules imported it by name. A missing target raises (the mutation no longer
    applies)."""
    mod = importlib.import_module(module)
    original = getattr(mod, attr)
    new = make(original)
    setattr(mod, attr, new)
    for m in list(sys.modules.values()) if everywhere else []:
        ours = getattr(m, "__name__", "").startswith("autointerp")
        if ours and getattr(m, attr, None) is original:
            setattr(m, attr, new)


def method(cls: type, name: str, make: Callable[[Any], Any]) -> None:
    setattr(cls, name, make(getattr(cls, name)))


# -- the defects ----------------------------------------------------------------------------
def fuzzing_no_wrong_highlights() -> None:
    from autointerp.scorers.fuzzing import FuzzingScorer

    def make(orig):
        def items(self, ex, split):
            out = orig(self, ex, split)
            kept = [it for it in out if it.meta.get("variant") != "wrong"]
            if len(kept) < len(out):
                fired()
            return kept

        return items

    method(FuzzingScorer, "items", make)


def fuzzing_contrast_unhighlighted() -> None:
    from autointerp.scorers.fuzzing import FuzzingScorer

    def make(orig):
        def items(self, ex, split):
            out = orig(self, ex, split)
            for it in out:
                if it.meta.get("variant") == "contrast" and any(it.highlighted or []):
                    it.highlighted = [0] * len(it.tokens)
                    fired()
            return out

        return items

    method(FuzzingScorer, "items", make)


class _Highlighted:
    """A latent's windows with the activating ones' firing tokens marked (detection leak)."""

    def __init__(self, ex: Any, threshold: float) -> None:
        self._ex, self._thr = ex, threshold

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ex, name)

    def windows(self, split: str, kind: Any = None) -> list[dict[str, Any]]:
        from autointerp.runner.examples import highlight_mask
        from autointerp.text import CLOSE, OPEN

        out = []
        for r in self._ex.windows(split, kind):
            if r["kind"] == "activating":
                mask = highlight_mask(r["activations_norm"], self._thr)
                if mask.any():
                    fired()
                pairs = zip(r["strings"], mask, strict=True)
                r = {**r, "strings": [OPEN + s + CLOSE if m else s for s, m in pairs]}
            out.append(r)
        return out


def detection_shows_highlights() -> None:
    from autointerp.scorers.detection import DetectionScorer

    def make(orig):
        def items(self, ex, split):
            return orig(self, _Highlighted(ex, self.config.highlight_threshold), split)

        return items

    method(DetectionScorer, "items", make)


def simulation_scored_against_shuffled_truth() -> None:
    def make(orig):
        def pearson_metrics(truth, pred, *args, **kwargs):
            truth = list(truth)
            by_len: dict[int, list[int]] = {}
            for i, t in enumerate(truth):
                by_len.setdefault(len(t), []).append(i)
            shuffled = list(truth)
            for idx in by_len.values():
                if len(idx) > 1:
                    fired()
                    for a, b in zip(idx, idx[1:] + idx[:1], strict=True):
                        shuffled[a] = truth[b]
            return orig(shuffled, pred, *args, **kwargs)

        return pearson_metrics

    patch("autointerp.scorers.simulation", "pearson_metrics", make)


def metrics_labels_swapped() -> None:
    def make(orig):
        def binary_metrics(truth, *args, **kwargs):
            truth = np.asarray(truth, dtype=bool)
            if truth.size:
                fired()
            return orig(~truth, *args, **kwargs)

        return binary_metrics

    patch("autointerp.scorers.metrics", "binary_metrics", make)


def chance_level_wrong() -> None:
    def make(orig):
        def _binary_chance(n_pos: int, n_neg: int) -> dict[str, float]:
            out = dict(orig(n_pos, n_neg))
            if n_pos + n_neg:
                fired()  # balanced accuracy's chance taken as the share of positives
                out["balanced_accuracy"] = n_pos / (n_pos + n_neg)
            return out

        return _binary_chance

    patch("autointerp.scorers.metrics", "_binary_chance", make)


def bootstrap_not_resampling() -> None:
    def make(orig):
        def _draws(rng, n_boot: int, n: int):
            out = orig(rng, n_boot, n)
            if n:
                fired()  # every "resample" is the sample itself
                out = np.broadcast_to(np.arange(n), out.shape).copy()
            return out

        return _draws

    patch("autointerp.scorers.metrics", "_draws", make)


def answers_misaligned() -> None:
    def make(orig):
        def read_answers(response, n):
            labels, probs, err = orig(response, n)
            if labels is not None and n > 1:
                fired()  # answers given to the windows in reverse order
                labels = labels[::-1]
                probs = probs[::-1] if probs is not None else None
            return labels, probs, err

        return read_answers

    patch("autointerp.scorers.judge", "read_answers", make)


def explainer_sees_test_windows() -> None:
    def make(orig):
        def iter_latent_examples(run_dir, hookpoint, vocab, splits, *args, **kwargs):
            for ex in orig(run_dir, hookpoint, vocab, (*splits, "test"), *args, **kwargs):
                test = [r for r in ex.records if r["split"] == "test"]
                if test:
                    fired()  # the explainer's "train" windows are the test windows
                    rest = [r for r in ex.records if r["split"] not in ("train", "test")]
                    ex.records = [{**r, "split": "train"} for r in test] + rest
                yield ex

        return iter_latent_examples

    # only where the explain stage reads its windows (the scorers keep theirs)
    patch("autointerp.explainers.run", "iter_latent_examples", make, everywhere=False)


def best_of_k_selects_on_test() -> None:
    from autointerp.explainers.best_of_k import BestOfKExplainer
    from autointerp.scorers.detection import DetectionScorer

    BestOfKExplainer.splits = (*BestOfKExplainer.splits, "test")

    def make(orig):
        async def score(self, ex, explanation, llm, split="test"):
            if split == "selection":
                fired()
                split = "test"
            return await orig(self, ex, explanation, llm, split=split)

        return score

    method(DetectionScorer, "score", make)


def calibration_true_vs_true() -> None:
    import polars as pl

    from autointerp.explainers.base import explanation_id

    def make(orig):
        def planted_explanations(hookpoint, explanations):
            df = orig(hookpoint, explanations)
            fired()  # the "shuffled" explanation is the latent's own
            own = pl.Series([explanations[i] for i in df["latent"]], dtype=pl.String)
            return df.with_columns(
                explanation=own, explanation_id=own.map_elements(explanation_id, pl.String)
            )

        return planted_explanations

    patch("autointerp.calibrate", "planted_explanations", make)


EVIDENCE = "tests/test_scorer_evidence.py"
METRICS = "tests/test_metrics.py"
TRUE_BEATS = "tests/test_explain_score.py::test_true_explanation_beats_another_latents"
BEST_OF_K = "tests/test_explain_score.py::test_best_of_k_never_reads_test_windows"
PLANTED = "tests/test_planted_scoring.py"
SIM_TRUTH = f"{EVIDENCE}::test_simulation_is_scored_against_the_shown_windows_truth"
MUTATIONS: dict[str, Mutation] = {
    "fuzzing_no_wrong_highlights": Mutation(
        "fuzzing shows no wrongly highlighted window", fuzzing_no_wrong_highlights, (EVIDENCE,)
    ),
    "fuzzing_contrast_unhighlighted": Mutation(
        "fuzzing shows contrast windows without highlights",
        fuzzing_contrast_unhighlighted,
        (EVIDENCE,),
    ),
    "detection_shows_highlights": Mutation(
        "detection shows activating windows with their firing tokens highlighted",
        detection_shows_highlights,
        (EVIDENCE,),
    ),
    "simulation_shuffled_truth": Mutation(
        "simulation scored against another window's true activations",
        simulation_scored_against_shuffled_truth,
        (SIM_TRUTH,),
    ),
    "metrics_labels_swapped": Mutation(
        "binary metrics computed with truth labels swapped", metrics_labels_swapped, (METRICS,)
    ),
    "chance_level_wrong": Mutation(
        "balanced-accuracy chance level stated as the share of positives",
        chance_level_wrong,
        (METRICS,),
    ),
    "bootstrap_not_resampling": Mutation(
        "bootstrap 'resamples' are the sample itself (zero-width CI)",
        bootstrap_not_resampling,
        (METRICS,),
    ),
    "answers_misaligned": Mutation(
        "judge answers assigned to a prompt's windows in reverse order",
        answers_misaligned,
        (TRUE_BEATS,),
    ),
    "explainer_sees_test_windows": Mutation(
        "explainers given the test windows as their train windows",
        explainer_sees_test_windows,
        (EVIDENCE,),
    ),
    "best_of_k_selects_on_test": Mutation(
        "best-of-k chooses its candidate by detection on the test split",
        best_of_k_selects_on_test,
        (BEST_OF_K,),
    ),
    "calibration_true_vs_true": Mutation(
        "calibrate compares each true explanation with itself instead of another latent's",
        calibration_true_vs_true,
        (PLANTED,),
    ),
}


def apply(name: str) -> None:
    """Apply mutation ``name`` in this process (called by tests/conftest.py)."""
    if name not in MUTATIONS:
        raise SystemExit(f"unknown mutation {name!r}: use one of {', '.join(MUTATIONS)}")
    MUTATIONS[name].apply()


# -- the runner -----------------------------------------------------------------------------
def pytest(
    targets: list[str], env: dict[str, str], timeout: float
) -> tuple[int, float, str, list[str]]:
    """(exit code, seconds, pytest's last line, the failed tests' ids)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rf", "-p", "no:cacheprovider", *targets]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return -1, time.perf_counter() - t0, "timeout", []
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    failed = [ln.split()[1] for ln in lines if ln.startswith("FAILED ")]
    return proc.returncode, time.perf_counter() - t0, lines[-1] if lines else "", failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="mutation names")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    args = parser.parse_args()
    if args.list:
        for name, m in MUTATIONS.items():
            print(f"{name}: {m.what} (killed by {', '.join(m.tests)})")
        return
    names = list(args.only or MUTATIONS)
    unknown = [n for n in names if n not in MUTATIONS]
    if unknown:
        raise SystemExit(f"unknown mutation(s) {unknown}: use --list to see the names")
    t_start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="mutation_check_"))
    env = {k: v for k, v in os.environ.items() if k not in (ENV, HITS_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["AUTOINTERP_TEST_PLANTED_DIR"] = str(tmp / "planted")  # the planted cache, built once
    targets = list(dict.fromkeys(t for n in names for t in MUTATIONS[n].tests))
    rc, secs, tail, _ = pytest(targets, env, args.timeout * 2)
    print(f"baseline (no mutation): rc {rc} in {secs:.0f}s: {tail}", flush=True)
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        print(json.dumps({"error": "the unmutated tests fail", "baseline": tail}))
        raise SystemExit(1)
    results = []
    for name in names:
        m = MUTATIONS[name]
        hits = tmp / f"{name}.hits"
        mutated = {**env, ENV: name, HITS_ENV: str(hits)}
        rc, secs, tail, failed = pytest(list(m.tests), mutated, args.timeout)
        active = hits.is_file() and name in hits.read_text().split()
        status = "killed" if rc == 1 and active else "inert" if not active else "survived"
        if rc not in (0, 1):
            status = "error"
        print(f"{name}: {status} (rc {rc}, {secs:.0f}s): {tail} {' '.join(failed)}", flush=True)
        results.append({"name": name, "status": status, "seconds": round(secs, 1), "by": failed})
    shutil.rmtree(tmp, ignore_errors=True)
    survivors = [r["name"] for r in results if r["status"] != "killed"]
    out = {
        "mutations_total": len(results),
        "mutations_killed": len(results) - len(survivors),
        "survivors": survivors,
        "seconds_total": round(time.perf_counter() - t_start, 1),
        "load_1min": round(os.getloadavg()[0], 2),
        "results": {r["name"]: r["status"] for r in results},
        "killed_by": {r["name"]: r["by"] for r in results if r["status"] == "killed"},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
