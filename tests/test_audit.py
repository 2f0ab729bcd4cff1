"""The shortcut audit (scorers/audit.py): a planted cue is found, a cue-free mix sits at
chance, cue judges are cross-fitted (never tuned on the latent they score), the files are
written as documented; and the sampled windows the scorers show carry no position, BOS or
highlight-count cue (the leaks found on the demo: the peak at a fixed offset, wrong highlights
on random places, BOS shown mostly in activating windows)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from stage_helpers import synthetic_run

from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.scorers.audit import AUDIT_SCHEMA, run_audit
from autointerp.scorers.audit_cues import CEILING, audit_items, best_threshold, cue_matrix, picks
from autointerp.scorers.audit_summary import audit_summary, format_audit
from autointerp.scorers.run import score

DOCS = Path(__file__).parents[1] / "docs"
WIDTH = 32


def _items(n_lat: int, n_items: int, leak: bool, seed: int = 0) -> pl.DataFrame:
    """Binary items: truth half the time; highlights uniform over the window, except that with
    ``leak`` every true item is highlighted at offset 24 (the old fuzzing leak)."""
    rng = np.random.default_rng(seed)
    rows = []
    for lat in range(n_lat):
        for i in range(n_items):
            truth = bool(i % 2)
            k = int(rng.integers(1, 4))
            pos = set(rng.choice(WIDTH, size=k, replace=False).tolist())
            if leak and truth:
                pos.add(24)
            pos = sorted(pos)
            rows.append(
                {
                    "config_hash": "c",
                    "hookpoint": "h",
                    "latent": lat,
                    "explanation_id": "e",
                    "prompt": i // 20,
                    "position": i % 20,
                    "truth": truth,
                    "shown_tokens": WIDTH,
                    "shown_special": 0,
                    "highlighted": pos,
                    "highlighted_ids": [p + 5 for p in pos],
                }
            )
    return pl.DataFrame(
        rows,
        schema_overrides={
            "latent": pl.Int32,
            "shown_tokens": pl.Int16,
            "shown_special": pl.Int16,
            "highlighted": pl.List(pl.Int16),
            "highlighted_ids": pl.List(pl.Int32),
        },
    )


def _audit(df: pl.DataFrame) -> dict[str, float]:
    names, x = cue_matrix(df)
    group = df["latent"].to_numpy().astype(np.int64)
    ba, _ = audit_items(names, x, df["truth"].to_numpy(), group, None)
    return {k: float(np.nanmean(v)) for k, v in ba.items()}


def test_cue_matrix_reads_what_was_shown() -> None:
    df = _items(1, 2, leak=False).with_columns(
        pl.Series("highlighted", [[3, 4, 9], []], dtype=pl.List(pl.Int16)),
        pl.Series("highlighted_ids", [[7, 7, 8], []], dtype=pl.List(pl.Int32)),
        pl.Series("shown_special", [1, 0], dtype=pl.Int16),
    )
    counts = {"h": np.log1p(np.array([0, 0, 0, 0, 0, 0, 0, 9, 99], dtype=np.float64))}
    names, x = cue_matrix(df, counts)
    got = dict(zip(names, x[0].tolist(), strict=True))
    assert got["n_highlighted"] == 3 and got["n_highlight_runs"] == 2
    assert got["first_highlight"] == 3 and got["last_highlight"] == 9
    assert got["mean_highlight"] == pytest.approx(16 / 3)
    assert got["highlight_log_frequency"] == pytest.approx((2 * np.log(10) + np.log(100)) / 3)
    assert got["shown_special"] == 1 and got["shown_tokens"] == WIDTH
    assert [got[f"highlight_at_{o}"] for o in (2, 3, 4, 9, 10)] == [0, 1, 1, 1, 0]
    empty = dict(zip(names, x[1].tolist(), strict=True))
    assert empty["n_highlighted"] == 0 and empty["first_highlight"] == -1


def test_best_threshold_and_picks_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 200).astype(float)
    y = rng.random(200) < 0.3 + 0.1 * x
    t, up, ba = best_threshold(x, y)
    brute = []
    for tt in np.unique(x):
        pred = x >= tt
        b = 0.5 * (pred[y].mean() + (~pred[~y]).mean())
        brute += [(b, tt, True), (1 - b, tt, False)]
    assert ba == pytest.approx(max(b for b, *_ in brute))
    pred = (x >= t) if up else (x < t)
    assert 0.5 * (pred[y].mean() + (~pred[~y]).mean()) == pytest.approx(ba)
    # one pick per prompt; ties share it
    p = picks(np.array([1.0, 3.0, 3.0, 0.0, 2.0]), np.array([0, 0, 0, 1, 1]))
    assert p.tolist() == [0.0, 0.5, 0.5, 0.0, 1.0]


def test_best_threshold_whole_number_path_matches_the_sorted_one() -> None:
    # whole-number cues are counted per value, others sorted: the same rule either way
    rng = np.random.default_rng(5)
    for x in (
        rng.integers(-1, 40, 3000).astype(float),  # offsets (-1: none)
        (rng.random(3000) < 0.1).astype(float),  # highlighted at an offset
        rng.integers(0, 3, 3000).astype(float) * 1000.0,  # sparse values
    ):
        y = rng.random(len(x)) < 0.3 + 0.004 * np.clip(x, 0, 100)
        t, up, ba = best_threshold(x, y)
        # x + 0.5 is not whole: the sorted path; its rule is the same shifted by 0.5
        t2, up2, ba2 = best_threshold(x + 0.5, y)
        assert (t + 0.5, up, ba) == (t2, up2, ba2)


def test_planted_position_leak_is_found() -> None:
    got = _audit(_items(60, 40, leak=True))
    assert got["highlight_at_24"] > 0.85  # "yes iff offset 24 highlighted"
    assert got[CEILING] > 0.85
    assert got["n_highlighted"] > 0.55  # the planted highlight also adds one to the count


def test_leak_free_mix_is_at_chance() -> None:
    got = _audit(_items(60, 40, leak=False))
    assert abs(got[CEILING] - 0.5) < 0.03
    assert max(v for k, v in got.items()) < 0.55


def test_cue_judges_are_never_tuned_on_the_latent_they_score() -> None:
    """A cue that points one way in half the latents and the other way in the rest tells a
    judge nothing it could know without the latent's answers: cross-fitted, it is at chance
    (a rule chosen on each latent's own items would score ~1)."""
    df = _items(60, 40, leak=False)
    flip = (df["latent"] % 2 == 0) == df["truth"]
    df = df.with_columns(pl.Series("shown_special", flip.cast(pl.Int16)))
    got = _audit(df)
    assert got["shown_special"] < 0.56 and got[CEILING] < 0.56


def test_audit_files_summary_and_leak_flag(tmp_path: Path) -> None:
    scores = tmp_path / "scores"
    scores.mkdir()
    _items(30, 40, leak=True).write_parquet(scores / "fuzzing.examples.parquet")
    _items(30, 40, leak=False).write_parquet(scores / "detection.examples.parquet")
    paths = run_audit(tmp_path)
    assert set(paths) == {"fuzzing", "detection"}
    df = pl.read_parquet(paths["fuzzing"])
    assert dict(df.schema) == AUDIT_SCHEMA
    doc = (DOCS / "score.md").read_text()
    assert all(f"`{c}`" in doc for c in AUDIT_SCHEMA)
    assert "`scores/<scorer>.audit.parquet`" in doc
    assert df["latent"].n_unique() == 30 and (df["n_examples"] == 40).all()
    assert (df["n_positive"] == 20).all()
    ceil = df.filter(pl.col("cue") == CEILING)
    assert ceil["rule"][0].startswith("logistic regression")
    assert df.filter(pl.col("cue") == "highlight_at_24")["rule"][0] == (
        "yes iff highlight_at_24 >= 1"
    )
    lines = format_audit(audit_summary(tmp_path))
    fuzz = next(ln for ln in lines if "fuzzing" in ln)
    det = next(ln for ln in lines if "detection" in ln)
    assert "LEAKING" in fuzz and "highlight_at_24" in fuzz
    assert "no leak found" in det


def test_audit_does_not_depend_on_the_row_order_of_the_examples_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # part files are appended in the order workers wrote them: the same rows in another order
    # must give the same audit, the ceiling's fit on a seeded subsample of rows included
    monkeypatch.setattr("autointerp.scorers.audit_cues.MAX_FIT_ROWS", 700)
    scores = tmp_path / "scores"
    scores.mkdir()
    items = _items(30, 40, leak=False)  # no leak: the ceiling's fit sits on the fence
    out = []
    for frame in (items, items.sample(fraction=1.0, shuffle=True, seed=3), items.reverse()):
        frame.write_parquet(scores / "fuzzing.examples.parquet")
        (scores / "fuzzing.audit.parquet").unlink(missing_ok=True)
        out.append(pl.read_parquet(run_audit(tmp_path)["fuzzing"]))
    assert out[0].equals(out[1])
    assert out[0].equals(out[2])


def test_intruder_cue_judge_picks_one_window_per_prompt() -> None:
    """Intruder: the intruder (truth) is the window with the most highlights in a planted
    mix; the audit's pick-the-extreme judge finds it, and the ceiling too."""
    rng = np.random.default_rng(1)
    rows_x, rows_y, group, prompt = [], [], [], []
    for lat in range(40):
        for p in range(8):
            intruder = int(rng.integers(5))
            for j in range(5):
                rows_x.append([1.0 + (j == intruder), float(rng.integers(3))])
                rows_y.append(j == intruder)
                group.append(lat)
                prompt.append(lat * 8 + p)
    ba, rules = audit_items(
        ["n_highlighted", "noise"],
        np.array(rows_x),
        np.array(rows_y),
        np.array(group),
        np.array(prompt),
    )
    assert np.nanmean(ba["n_highlighted"]) == pytest.approx(1.0)
    assert rules["n_highlighted"][0] == "pick the highest n_highlighted"
    assert abs(np.nanmean(ba["noise"]) - 0.5) < 0.05
    assert np.nanmean(ba[CEILING]) > 0.95


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run sampled with the default config and scored by the lexical judge."""
    run = synthetic_run(tmp_path_factory.mktemp("audit"), 48)
    cfg = load_config(None, {"run_dir": str(run)})
    explain(run, cfg, progress=False)
    score(run, cfg, scorers=["detection", "fuzzing", "intruder"], progress=False)
    return run


@pytest.mark.parametrize("scorer", ["detection", "fuzzing", "intruder"])
def test_sampled_windows_carry_no_cue(scored_run: Path, scorer: str) -> None:
    """What the scorers show on default-sampled windows: every cue judge and the ceiling near
    chance (the bound leaves room for the noise of ~46 latents). Before the fixes: fuzzing's
    ceiling 0.760 (the peak's fixed offset), intruder's marked-token frequency 0.577 (random
    tokens marked on the intruder), detection's special-token cue 0.538 (BOS shown mostly in
    activating windows; EOS, shown anywhere, dilutes it here); after: 0.511 for detection."""
    summary = audit_summary(scored_run, [scorer])
    assert summary.height >= 3  # detection: length, special tokens, ceiling
    worst = summary.sort("mean", descending=True).row(0, named=True)
    assert worst["mean"] < (0.53 if scorer == "detection" else 0.56), worst
    assert summary["latents"].min() >= 40


def test_examples_record_what_the_judge_was_shown(scored_run: Path) -> None:
    fz = pl.read_parquet(scored_run / "scores" / "fuzzing.examples.parquet")
    assert (fz["shown_tokens"] == 16).all() and (fz["shown_special"] >= 0).all()
    assert (fz["highlighted"].list.len() == fz["highlighted_ids"].list.len()).all()
    assert (fz["highlighted"].list.len() >= 1).all()  # wrong/contrast borrow real masks
    det = pl.read_parquet(scored_run / "scores" / "detection.examples.parquet")
    assert det["highlighted"].is_null().all()
    # shown_special counts the special tokens of the window (ids 0 BOS, 1 EOS); BOS (only at
    # position 0 of a sequence) is never shown: windows start after it
    [path] = (scored_run / "examples").glob("*.parquet")
    windows = pl.read_parquet(path).select("latent", "seq_id", "start", "tokens")
    joined = det.join(windows, on=["latent", "seq_id", "start"], how="left")
    special = joined["tokens"].list.eval(pl.element().is_in([0, 1]).sum()).list.first()
    assert (joined["shown_special"] == special).all() and special.sum() > 0
    assert (det["start"] >= 1).all() and not joined["tokens"].list.contains(0).any()
    assert (joined["shown_tokens"] == joined["tokens"].list.len()).all()


def test_cli_summary_and_report_show_the_audit(scored_run: Path, tmp_path: Path) -> None:
    """`autointerp score` prints the audit line of every audited scorer after the score
    table; the report's summary shows the same verdicts beside the scores."""
    from typer.testing import CliRunner

    from autointerp.cli import app
    from autointerp.report.html import summary_html

    res = CliRunner().invoke(
        app, ["score", str(scored_run), "--scorers", "detection,fuzzing", "--no-progress"]
    )
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("shortcut audit")]
    assert [ln.split()[2] for ln in lines] == ["detection", "fuzzing"]
    assert all("no leak found" in ln and "ceiling" in ln for ln in lines)

    scores = tmp_path / "scores"
    scores.mkdir()
    _items(30, 40, leak=True).write_parquet(scores / "fuzzing.examples.parquet")
    run_audit(tmp_path)
    empty = {"hookpoints": [], "explainers": [], "llm_stages": []}
    page = summary_html(empty, pl.DataFrame(), audit_summary(tmp_path))
    assert "Shortcut audit" in page and "LEAKING" in page and "highlight_at_24" in page


def test_one_latent_is_not_audited_nor_called_clean() -> None:
    """Cues are fitted on other latents: with one scored latent there is nothing to audit,
    and the line says so instead of "no leak found" over NaN."""
    summary = pl.DataFrame(
        {
            "scorer": ["detection", "detection", "fuzzing", "fuzzing"],
            "config_hash": ["aaaaaa", "aaaaaa", "bbbbbb", "bbbbbb"],
            "cue": [CEILING, "shown_tokens", CEILING, "shown_tokens"],
            "mean": [float("nan"), float("nan"), 0.51, 0.50],
            "ci_lo": [float("nan"), float("nan"), 0.50, 0.49],
            "ci_hi": [float("nan"), float("nan"), 0.52, 0.51],
            "chance": [0.5] * 4,
            "latents": [0, 0, 3, 3],
        }
    )
    det, fuzz = format_audit(summary)
    assert "not audited" in det and "no leak" not in det and "nan" not in det
    assert "no leak found" in fuzz and "3 latents" in fuzz
