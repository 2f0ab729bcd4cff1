"""`autointerp report`: files and data of the static report, and the page in a real headless
Chromium (system packages `chromium` + `chromium-driver`, installed by scripts/setup.sh test)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from synthetic_cache import random_cache
from typer.testing import CliRunner

from autointerp.cli import app
from autointerp.config import load_config
from autointerp.explainers.run import explain
from autointerp.report import build_report
from autointerp.report.html import window_html
from autointerp.sampling import SampleConfig
from autointerp.sampling.build import build_examples
from autointerp.scorers.run import score

N_LAT = 24
HP = "model.layers.1"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
DOCS = Path(__file__).parents[1] / "docs"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("report") / "run"
    random_cache(run, n_seqs=300, n_latents=N_LAT)
    decoder = torch.randn(N_LAT, 8, generator=torch.Generator().manual_seed(0))
    build_examples(run, SampleConfig(seed=1, window_len=16), decoder=decoder, progress=False)
    cfg = load_config(None, {"run_dir": str(run)})
    explain(run, cfg, progress=False)
    score(run, cfg, scorers=["detection", "fuzzing", "simulation"], progress=False)
    return run


@pytest.fixture(scope="module")
def report(run: Path) -> Path:
    return build_report(run)


def _js(path: Path, name: str) -> dict:
    text = path.read_text(encoding="utf-8")
    m = re.fullmatch(rf"window\.{name}(?: = |\()(.*?)\)?;\n", text, re.DOTALL)
    assert m, text[:80]
    return json.loads(m.group(1))


def test_report_files_and_data(run: Path, report: Path) -> None:
    out = run / "report"
    assert report == out / "index.html"
    for name in ("scores_detection", "scores_fuzzing", "scores_simulation",
                 "score_vs_frequency", "agreement"):  # fmt: skip
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = report.read_text()
    assert 'src="plots/agreement.png"' in page and "lexical-baseline" in page

    index = _js(out / "data" / "index.js", "AUTOINTERP_INDEX")
    assert index["scorers"] == ["detection", "fuzzing", "simulation"]
    assert index["hookpoints"] == [HP] and len(index["rows"]) == N_LAT
    col = {c: i for i, c in enumerate(index["columns"])}
    rows = {r[col["latent"]]: r for r in index["rows"]}
    assert rows[0][col["status"]] == "skipped" and rows[0][col["detection"]] is None
    det = pl.read_parquet(run / "scores" / "detection.parquet")
    ba = dict(zip(det["latent"], det["balanced_accuracy"], strict=True))
    assert rows[5][col["detection"]] == pytest.approx(ba[5])
    agree = pl.read_csv(out / "plots" / "agreement.csv")
    assert np.allclose(np.diag(agree.drop("scorer").to_numpy()), 1.0)

    files = sorted(p.name for p in (out / "latents" / HP).iterdir())
    assert files == ["0.js"]  # 24 latents, 64 per chunk
    chunk = _js(out / "latents" / HP / "0.js", "AUTOINTERP_CHUNK")
    assert chunk["first"] == 0 and sorted(map(int, chunk["latents"])) == list(range(N_LAT))
    d = chunk["latents"]["5"]
    assert len(d["activating"]) == 10 and "<mark" in d["activating"][0]["html"]
    assert {w["kind"] for w in d["contrast"]} == {"random", "similar", "neighbour"}
    assert {s["scorer"] for s in d["scores"]} == {"detection", "fuzzing", "simulation"}
    ex = pl.read_parquet(run / "examples" / f"{HP}.parquet").filter(
        (pl.col("latent") == 5) & (pl.col("kind") == "neighbour")
    )
    assert {n["latent"] for n in d["neighbours"]} == set(ex["source_latent"].to_list())
    assert chunk["latents"]["0"]["skipped"].startswith("dead")
    doc = (DOCS / "report.md").read_text()
    for name in ("index.html", "data/index.js", "latents/", "agreement.png", "--open"):
        assert name in doc


def test_window_html_escapes_and_marks() -> None:
    html = window_html(["<b>", " x", "&"], [0, 10, 3], [0.0, 2.5, 0.75])
    assert html == (
        '&lt;b&gt;<mark style="--a:1.0" title="2.5"> x</mark>'
        '<mark style="--a:0.3" title="0.75">&amp;</mark>'
    )


def test_cli_report_and_errors(run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    out = tmp_path / "rep"
    res = CliRunner().invoke(app, ["report", str(run), "--out", str(out), "--open"])
    assert res.exit_code == 0, res.output
    assert opened == [(out / "index.html").resolve().as_uri()]
    res = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "no run directory" in res.output


def _driver():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.fail(
            f"headless Chromium is needed: {CHROMIUM} / {CHROMEDRIVER} missing. Install the Debian "
            "packages: apt-get install -y chromium chromium-driver (scripts/setup.sh test does)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--window-size=1300,1600"):  # fmt: skip
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_page_in_headless_chromium(run: Path, report: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    expl = pl.read_parquet(run / "explanations.parquet")
    text = expl.filter(pl.col("latent") == 7)["explanation"][0]
    word = text.split(", ")[0].removeprefix("tokens: ")  # a token in quotes: '"X"'
    expected = sorted(
        expl.filter(
            pl.col("explanation").str.to_lowercase().str.contains(word.lower(), literal=True)
        )["latent"].to_list()
    )
    driver = _driver()
    try:
        driver.get(report.resolve().as_uri())
        body = driver.find_element(By.ID, "index-body")
        assert len(body.find_elements(By.TAG_NAME, "tr")) == N_LAT
        driver.save_screenshot(str(tmp_path / "report_index.png"))
        driver.find_element(By.ID, "search").send_keys(word)
        found = [int(r.get_attribute("data-latent")) for r in body.find_elements(By.TAG_NAME, "tr")]
        assert sorted(found) == expected and 7 in found
        body.find_element(By.CSS_SELECTOR, 'tr[data-latent="7"]').click()
        WebDriverWait(driver, 10).until(
            lambda d: d.find_elements(By.CSS_SELECTOR, "#latent-detail .window mark")
        )
        detail = driver.find_element(By.ID, "latent-detail")
        assert "Latent 7" in detail.text and text in detail.text
        assert len(detail.find_elements(By.CSS_SELECTOR, ".window.activating")) == 10
        assert not driver.find_element(By.ID, "latent-view").get_attribute("hidden")
        shot = tmp_path / "report_latent.png"
        driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:4] == b"\x89PNG"
        logs = driver.get_log("browser")
        assert [e for e in logs if e["level"] == "SEVERE"] == [], logs
    finally:
        driver.quit()


def test_summary_shows_control_scores_beside_the_real_ones() -> None:
    import polars as pl

    from autointerp.report.html import summary_html

    scores = pl.DataFrame(
        {
            "scorer": ["detection"], "explainer": ["default"], "config_hash": ["abcdef1234"],
            "metric": ["auroc"], "mean": [0.8], "ci_lo": [0.7], "ci_hi": [0.9],
            "chance": [0.5], "scored": [10], "skipped": [0], "failed": [0],
            "examples_lost": [0], "control": ["random-coder"], "control_mean": [0.55],
            "control_ci_lo": [0.5], "control_ci_hi": [0.6], "control_scored": [5],
        }
    )  # fmt: skip
    summary = {"hookpoints": [], "explainers": [], "llm_stages": [], "llm_total": {},
               "llm_models": []}  # fmt: skip
    page = summary_html(summary, scores)
    assert "control mean [95% CI]" in page and "random-coder" in page
    assert "0.550 [0.500, 0.600]" in page
    assert "control" not in summary_html(
        summary,
        scores.drop("control", "control_mean", "control_ci_lo", "control_ci_hi", "control_scored"),
    )


def test_latent_view_carries_output_views_when_computed(run: Path, tmp_path: Path) -> None:
    from autointerp.output_views import write_views

    row = {
        "hookpoint": HP, "latent": 5, "lens_top": [" return", " if"], "lens_top_logit": [3.0, 2.0],
        "lens_bottom": [" def"], "lens_bottom_logit": [-1.0], "steer_top": [" return"],
        "steer_top_delta": [0.4],
    }  # fmt: skip
    write_views(run, HP, [row])
    out = build_report(run, out_dir=tmp_path / "r").parent
    chunk = _js(out / "latents" / HP / "0.js", "AUTOINTERP_CHUNK")
    assert chunk["latents"]["5"]["output"] == {
        "lens_top": [" return", " if"],
        "lens_bottom": [" def"],
        "steer_top": [" return"],
    }
    assert chunk["latents"]["6"]["output"] is None  # no views for it: nothing shown
    assert "Output views" in (out / "report.js").read_text()
