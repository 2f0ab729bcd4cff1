"""Scoring metrics: exact point values, chance levels, bootstrap intervals and coverage."""

from __future__ import annotations

import ast
import inspect
import math
import warnings

import numpy as np
import pytest
from scipy import stats

from autointerp.scorers import metrics
from autointerp.scorers.metrics import (
    BINARY_METRICS,
    accuracy_metrics,
    binary_metrics,
    mean_ci,
)
from autointerp.scorers.metrics_pearson import pearson_metrics

sk = pytest.importorskip("sklearn.metrics")


def _sklearn_binary(truth: np.ndarray, pred: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """Reference values from scikit-learn (AUROC NaN with one class)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = {
            "accuracy": sk.accuracy_score(truth, pred),
            "balanced_accuracy": sk.balanced_accuracy_score(truth, pred),
            "precision": sk.precision_score(truth, pred, zero_division=0),
            "recall": sk.recall_score(truth, pred, zero_division=0),
            "f1": sk.f1_score(truth, pred, zero_division=0),
        }
    both = truth.any() and not truth.all()
    ref["auroc"] = sk.roc_auc_score(truth, score) if both else math.nan
    return ref


def _assert_matches(got: dict[str, float], ref: dict[str, float], skip: tuple = ()) -> None:
    for m in BINARY_METRICS:
        if m in skip:
            continue
        if math.isnan(ref[m]):
            assert math.isnan(got[m]), m
        else:
            assert got[m] == pytest.approx(ref[m], abs=1e-12), m


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    rng = np.random.default_rng(1)
    truth = rng.random(80) < 0.4
    prob = np.clip(np.round(0.35 * truth + 0.65 * rng.random(80), 1), 0, 1)  # many ties
    pred = prob >= 0.5
    t_small = np.array([1, 1, 1, 0, 0, 0, 0], bool)
    return {
        "ties_in_prob": (truth, pred, prob),
        "all_prob_tied": (truth, pred, np.full(80, 0.5)),
        "labels_only": (truth, pred, None),
        "hand": (t_small, np.array([1, 0, 1, 1, 0, 0, 0], bool), None),
        "all_negative_pred": (t_small, np.zeros(7, bool), np.linspace(0, 0.4, 7)),
        "all_positive_pred": (t_small, np.ones(7, bool), None),
        "single_class_pos": (np.ones(6, bool), np.array([1, 1, 0, 1, 0, 1], bool), None),
    }


@pytest.mark.parametrize("name", list(_cases()))
def test_binary_point_values_equal_sklearn(name: str) -> None:
    truth, pred, prob = _cases()[name]
    got = binary_metrics(truth, pred, prob, n_boot=50)
    score = pred.astype(float) if prob is None else prob
    one_class = truth.all() or not truth.any()
    _assert_matches(
        got, _sklearn_binary(truth, pred, score), skip=("balanced_accuracy",) if one_class else ()
    )
    assert got["single_class"] == float(one_class)
    assert got["n"] == truth.size
    assert got["n_pos"] == truth.sum() and got["n_neg"] == (~truth).sum()
    assert got["auroc_from_labels"] == (1.0 if prob is None else 0.0)


def test_binary_hand_values() -> None:
    truth, pred, _ = _cases()["hand"]  # TP=2 FN=1 FP=1 TN=3
    got = binary_metrics(truth, pred, n_boot=50)
    assert got["accuracy"] == pytest.approx(5 / 7)
    assert got["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["auroc"] == pytest.approx(got["balanced_accuracy"])  # hard labels


def test_binary_all_negative_predictions() -> None:
    truth, pred, prob = _cases()["all_negative_pred"]
    got = binary_metrics(truth, pred, prob, n_boot=50)
    assert got["precision"] == 0.0 and got["f1"] == 0.0 and got["recall"] == 0.0
    assert got["precision_lo"] == got["precision_hi"] == 0.0


def test_binary_single_class() -> None:
    truth, pred, _ = _cases()["single_class_pos"]
    got = binary_metrics(truth, pred, n_boot=50)
    assert got["recall"] == pytest.approx(4 / 6) and got["single_class"] == 1.0
    # one class: no balanced accuracy (an always-yes judge would get 1.0 against chance 0.5)
    always_yes = binary_metrics(truth, np.ones(6, bool), n_boot=50)
    for m in ("balanced_accuracy", "auroc"):
        for got_ in (got, always_yes):
            assert all(math.isnan(got_[m + s]) for s in ("", "_lo", "_hi", "_chance")), m
    assert math.isnan(got["auroc"]) and math.isnan(got["auroc_chance"])
    assert math.isnan(got["auroc_lo"]) and math.isnan(got["auroc_hi"])
    # only negatives: recall undefined; where sklearn substitutes 0 we return NaN
    neg = np.zeros(5, bool)
    said = np.array([1, 0, 0, 1, 0], bool)
    got = binary_metrics(neg, said, n_boot=50)
    _assert_matches(
        got, _sklearn_binary(neg, said, said.astype(float)), skip=("recall", "balanced_accuracy")
    )
    assert math.isnan(got["balanced_accuracy"]) and got["single_class"] == 1.0
    assert math.isnan(got["recall"]) and math.isnan(got["recall_chance"])
    assert got["precision"] == 0.0 and got["f1"] == 0.0  # 2 false positives, defined
    silent = binary_metrics(neg, np.zeros(5, bool), n_boot=50)
    assert math.isnan(silent["precision"]) and math.isnan(silent["f1"])
    assert silent["accuracy"] == 1.0 and math.isnan(silent["balanced_accuracy"])


def test_binary_empty() -> None:
    got = binary_metrics(np.array([], bool), np.array([], bool), n_boot=50)
    assert got["n"] == 0.0 and got["n_pos"] == 0.0 and got["n_neg"] == 0.0
    for m in BINARY_METRICS:
        for suffix in ("", "_lo", "_hi", "_chance"):
            assert math.isnan(got[m + suffix]), m + suffix


def test_binary_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="pred"):
        binary_metrics(np.ones(3, bool), np.ones(4, bool))
    with pytest.raises(ValueError, match="prob"):
        binary_metrics(np.ones(3, bool), np.ones(3, bool), np.ones(2))
    with pytest.raises(ValueError, match="finite"):
        binary_metrics(np.ones(2, bool), np.ones(2, bool), np.array([0.5, np.nan]))


def test_chance_levels_30_70() -> None:
    truth = np.arange(100) < 30
    pred = np.random.default_rng(0).random(100) < 0.5
    got = binary_metrics(truth, pred, n_boot=20)
    assert got["accuracy_chance"] == pytest.approx(0.7)
    assert got["balanced_accuracy_chance"] == 0.5
    assert got["precision_chance"] == pytest.approx(0.3)
    assert got["recall_chance"] == 0.5
    assert got["f1_chance"] == pytest.approx(0.6 / 1.3)
    assert got["auroc_chance"] == 0.5
    # the stated chance levels are what the named strategies score
    assert sk.accuracy_score(truth, np.zeros(100, bool)) == pytest.approx(0.7)
    assert sk.f1_score(truth, np.ones(100, bool)) == pytest.approx(0.6 / 1.3)
    assert sk.precision_score(truth, np.ones(100, bool)) == pytest.approx(0.3)


def _judge(rng: np.random.Generator, n_pos: int = 50, n_neg: int = 50) -> tuple:
    truth = np.arange(n_pos + n_neg) < n_pos
    prob = np.where(truth, rng.beta(4, 2, truth.size), rng.beta(2, 4, truth.size))
    pred = rng.random(truth.size) < np.where(truth, 0.8, 0.3)
    return truth, pred, prob


def test_ci_contains_point_and_is_seeded() -> None:
    truth, pred, prob = _judge(np.random.default_rng(3))
    a = binary_metrics(truth, pred, prob, seed=7)
    assert a == binary_metrics(truth, pred, prob, seed=7)
    b = binary_metrics(truth, pred, prob, seed=8)
    for m in BINARY_METRICS:
        assert a[f"{m}_lo"] <= a[m] <= a[f"{m}_hi"], m
        assert a[f"{m}_lo"] < a[f"{m}_hi"], m
        assert a[m] == b[m]
    assert any(a[f"{m}_lo"] != b[f"{m}_lo"] or a[f"{m}_hi"] != b[f"{m}_hi"] for m in BINARY_METRICS)
    # stratified: recall resamples positives only, so its interval ignores the negatives
    c = binary_metrics(truth, np.where(truth, pred, ~pred), prob, seed=7)
    assert (c["recall_lo"], c["recall_hi"]) == (a["recall_lo"], a["recall_hi"])


def test_wider_ci_level_is_wider() -> None:
    truth, pred, prob = _judge(np.random.default_rng(4))
    a = binary_metrics(truth, pred, prob, ci=0.8)
    b = binary_metrics(truth, pred, prob, ci=0.99)
    assert b["f1_lo"] <= a["f1_lo"] and a["f1_hi"] <= b["f1_hi"]
    with pytest.raises(ValueError):
        binary_metrics(truth, pred, ci=1.0)


def test_auroc_counts_equals_pairwise_formulation() -> None:
    rng = np.random.default_rng(5)
    s_pos = np.round(rng.random(40), 1)
    s_neg = np.round(rng.random(30) * 0.8, 1)
    vals, inv = np.unique(np.concatenate([s_pos, s_neg]), return_inverse=True)
    c_pos = rng.integers(0, 4, size=(6, 40)).astype(float)
    c_neg = rng.integers(0, 4, size=(6, 30)).astype(float)
    onehot = np.eye(vals.size)
    got = metrics._auroc_counts(c_pos @ onehot[inv[:40]], c_neg @ onehot[inv[40:]])
    m = (s_pos[:, None] > s_neg[None]) + 0.5 * (s_pos[:, None] == s_neg[None])
    want = np.einsum("bi,ij,bj->b", c_pos, m, c_neg) / (c_pos.sum(1) * c_neg.sum(1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_balanced_accuracy_ci_coverage() -> None:
    """95 % intervals cover the true balanced accuracy (0.75) about 95 % of the time."""
    rng = np.random.default_rng(11)
    reps, hits = 300, 0
    for i in range(reps):
        truth, pred, _ = _judge(rng)
        got = binary_metrics(truth, pred, n_boot=500, seed=i)
        hits += got["balanced_accuracy_lo"] <= 0.75 <= got["balanced_accuracy_hi"]
    assert 0.88 <= hits / reps <= 0.99


# ----------------------------------------------------------------------------- pearson


def _windows(rng: np.random.Generator, n: int, length: int, noise: float) -> tuple[list, list]:
    xs = [rng.standard_normal(length) for _ in range(n)]
    ys = [x + noise * rng.standard_normal(length) for x in xs]
    return xs, ys


def test_pearson_point_equals_scipy() -> None:
    rng = np.random.default_rng(2)
    xs, ys = _windows(rng, 12, 9, 1.0)
    xs.append(np.zeros(0))
    ys.append(np.zeros(0))  # an empty window counts as a window, with no tokens
    xs = [np.abs(x) * 5 + 100 for x in xs]  # offset: sums must not lose precision
    got = pearson_metrics(xs, ys, n_boot=200)
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert got["pearson"] == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-9)
    assert got["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
    assert got["n_windows"] == 13 and got["n_tokens"] == 108
    assert got["pearson_chance"] == 0.0
    assert got["pearson_lo"] <= got["pearson"] <= got["pearson_hi"]
    assert got == pearson_metrics(xs, ys, n_boot=200)
    other = pearson_metrics(xs, ys, n_boot=200, seed=1)
    assert (other["pearson_lo"], other["pearson_hi"]) != (got["pearson_lo"], got["pearson_hi"])


def test_pearson_groups_add_contrast_windows() -> None:
    rng = np.random.default_rng(3)
    acts = [np.abs(rng.standard_normal(8)) * (1 + g) for g in (0, 0, 1, 1, 1)]
    xs = [*acts, np.zeros(8), np.zeros(8), np.zeros(8)]
    ys = [x + 0.5 * rng.standard_normal(8) for x in xs]
    groups = np.array([0, 0, 1, 1, 1, -1, -1, -1])
    got = pearson_metrics(xs, ys, groups, n_boot=200)
    for g in (0, 1):
        sel = [i for i in range(8) if groups[i] in (g, -1)]
        x = np.concatenate([xs[i] for i in sel])
        y = np.concatenate([ys[i] for i in sel])
        assert got[f"pearson_q{g}"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-9)
        assert got[f"pearson_q{g}_lo"] <= got[f"pearson_q{g}"] <= got[f"pearson_q{g}_hi"]
    assert "pearson_q-1" not in got
    assert got["pearson"] == pytest.approx(
        np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1], abs=1e-9
    )


def test_pearson_constant_truth_is_nan_constant_prediction_is_zero() -> None:
    xs = [np.full(5, 0.1), np.full(4, 0.1)]
    ys = [np.arange(5.0), np.arange(4.0)]
    got = pearson_metrics(xs, ys, n_boot=100)  # constant truth: undefined
    assert math.isnan(got["pearson"]) and math.isnan(got["pearson_lo"])
    assert got["constant_prediction"] == 0.0
    got = pearson_metrics(ys, xs, n_boot=100, groups=np.array([0, -1]))
    # a constant prediction says nothing: r = 0 (its chance level), flagged, never NaN
    assert got["pearson"] == got["pearson_lo"] == got["pearson_hi"] == 0.0
    assert got["pearson_q0"] == 0.0 and got["constant_prediction"] == 1.0
    empty = pearson_metrics([], [], n_boot=100)
    assert empty["n_windows"] == 0 and math.isnan(empty["pearson"])
    # resamples that draw only constant windows are left out of the percentiles
    pair = [np.zeros(4), np.arange(4.0)]
    mixed = pearson_metrics(pair, pair, n_boot=100)
    assert mixed["pearson_lo"] == pytest.approx(1.0) and mixed["pearson_hi"] == pytest.approx(1.0)


def test_pearson_rejects_mismatched_windows() -> None:
    with pytest.raises(ValueError, match="window 1"):
        pearson_metrics([np.ones(3), np.ones(4)], [np.ones(3), np.ones(5)])
    with pytest.raises(ValueError, match="windows"):
        pearson_metrics([np.ones(3)], [np.ones(3), np.ones(3)])
    with pytest.raises(ValueError, match="groups"):
        pearson_metrics([np.ones(3)], [np.ones(3)], groups=np.array([0, 1]))


def test_pearson_ci_coverage() -> None:
    """95 % intervals cover the population r = 1 / sqrt(1 + noise^2) about 95 % of the time."""
    rng = np.random.default_rng(12)
    noise = math.sqrt(3.0)  # r = 0.5
    reps, hits = 300, 0
    for i in range(reps):
        xs, ys = _windows(rng, 40, 10, noise)
        got = pearson_metrics(xs, ys, n_boot=500, seed=i)
        hits += got["pearson_lo"] <= 0.5 <= got["pearson_hi"]
    assert 0.88 <= hits / reps <= 0.99


# ----------------------------------------------------------------------------- means, k-way


def test_mean_ci() -> None:
    v = np.array([0.2, np.nan, 0.4, 0.9, 0.5, np.nan, 0.7])
    mean, lo, hi = mean_ci(v)
    assert mean == pytest.approx(np.nanmean(v))
    assert lo <= mean <= hi and lo < hi
    assert mean_ci(v) == (mean, lo, hi)
    assert all(math.isnan(t) for t in mean_ci(np.array([np.nan, np.nan])))
    assert all(math.isnan(t) for t in mean_ci(np.array([])))
    assert mean_ci(np.array([0.3])) == pytest.approx((0.3, 0.3, 0.3))


def test_accuracy_metrics() -> None:
    correct = np.array([1, 0, 1, 1, 0, 1, 1, 0], bool)
    got = accuracy_metrics(correct, 4, n_boot=200)
    assert got["n"] == 8 and got["accuracy"] == pytest.approx(5 / 8)
    assert got["accuracy_chance"] == pytest.approx(0.25)
    assert got["accuracy_lo"] <= got["accuracy"] <= got["accuracy_hi"]
    mixed = accuracy_metrics(correct, np.array([2, 2, 4, 4, 5, 5, 5, 5]), n_boot=200)
    assert mixed["accuracy_chance"] == pytest.approx((2 * 0.5 + 2 * 0.25 + 4 * 0.2) / 8)
    empty = accuracy_metrics(np.array([], bool), 5)
    assert (
        empty["n"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["accuracy_chance"])
    )


# ----------------------------------------------------------------------------- vectorisation


def test_no_python_loop_over_resamples() -> None:
    """No for/while loop or comprehension in the module iterates over the resample count."""
    tree = ast.parse(inspect.getsource(metrics))
    boot_names = {"n_boot", "N_BOOT", "B", "b"}
    for node in ast.walk(tree):
        assert not isinstance(node, ast.While), f"while loop at line {node.lineno}"
        iters = [node.iter] if isinstance(node, (ast.For, ast.comprehension)) else []
        for it in iters:
            names = {n.id for n in ast.walk(it) if isinstance(n, ast.Name)}
            assert not names & boot_names, f"loop over resamples at line {it.lineno}"
            shapes = [n for n in ast.walk(it) if isinstance(n, ast.Attribute) and n.attr == "shape"]
            assert not shapes, f"loop over an array dimension at line {it.lineno}"
