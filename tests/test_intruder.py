"""The intruder scorer on a synthetic run: documented tables with the lexical baseline; a
scripted judge that always knows the intruder scores 1.0, one that guesses scores ~1/n; the
intruder's position is uniform and nothing in the prompt gives it away; the prompts never
depend on the explanation (a second explanation is answered from the response cache)."""

from __future__ import annotations

import json
import re
import shutil
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fake_server import FakeServer
from llm_helpers import SECRET
from scipy.stats import chisquare
from stage_helpers import copy_run, served, synthetic_run

from autointerp.config import DEMO_MODEL, load_config
from autointerp.explainers.run import explain
from autointerp.runner.examples import highlight_mask, iter_latent_examples
from autointerp.scorers.base import ScoreContext
from autointerp.scorers.intruder import IntruderScorer
from autointerp.scorers.rescore import rescore
from autointerp.scorers.run import score
from autointerp.scorers.summary import summarize
from autointerp.text import vocab_for

N_LAT = 24
N = 5  # windows per prompt (default): chance 1/5
DOCS = Path(__file__).parents[1] / "docs"
BLOCK = re.compile(r"^(\d+)\.\n(.*?)(?=\n\n\d+\.\n|\Z)", re.DOTALL | re.MULTILINE)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = synthetic_run(tmp_path_factory.mktemp("intruder"), N_LAT)
    explain(run, load_config(None, {"run_dir": str(run)}), progress=False)
    return run


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    return copy_run(base_run, tmp_path)


def expected_prompts(run: Path) -> dict[int, int]:
    """Per latent: sum over quantile bins of floor(test activating windows / (n - 1)), at most
    ``max_prompts`` (10)."""
    [path] = (run / "examples").glob("*.parquet")
    df = pl.read_parquet(path).filter(
        (pl.col("split") == "test") & (pl.col("kind") == "activating")
    )
    per_bin = df.group_by("latent", "quantile").agg((pl.len() // (N - 1)).alias("k"))
    per_latent = per_bin.group_by("latent").agg(pl.col("k").sum())
    return {int(lat): min(10, int(k)) for lat, k in per_latent.iter_rows()}


def activating_latents(run: Path) -> dict[str, set[int]]:
    """Plain text of every activating test window -> the latents it is activating for
    (read from the examples file: what the test knows, not what the prompt shows)."""
    [path] = (run / "examples").glob("*.parquet")
    df = pl.read_parquet(path).filter(
        (pl.col("split") == "test") & (pl.col("kind") == "activating")
    )
    vocab = vocab_for(DEMO_MODEL)
    out: dict[str, set[int]] = {}
    for lat, toks in zip(df["latent"], df["tokens"], strict=True):
        out.setdefault(bare(vocab.text(toks.to_list())), set()).add(int(lat))
    return out


def bare(text: str) -> str:
    """Text without any < or > (the marks; random windows hold such characters too, shown as
    ‹ / › where they touch a mark)."""
    return text.replace("<", "").replace(">", "").replace("‹", "").replace("›", "")


class Judge:
    """Answers intruder prompts: ``right`` finds the intruder from the examples file (the one
    excerpt that is not activating for the latent the other n-1 share); else guesses from a
    hash of the prompt. Records the user messages and the true positions (1-based)."""

    def __init__(self, act: dict[str, set[int]], right: bool) -> None:
        self.act, self.right = act, right
        self.users: list[str] = []
        self.truth: list[int] = []

    def __call__(self, body: dict) -> str:
        user = body["messages"][-1]["content"]
        blocks = [bare(m.group(2)) for m in BLOCK.finditer(user)]
        owners = [self.act.get(b, set()) for b in blocks]
        count = Counter(lat for s in owners for lat in s)
        [latent] = [lat for lat, c in count.items() if c == len(blocks) - 1]
        [truth] = [i + 1 for i, s in enumerate(owners) if latent not in s]
        self.users.append(user)
        self.truth.append(truth)
        answer = truth if self.right else zlib.crc32(user.encode()) % len(blocks) + 1
        return json.dumps({"intruder": answer})


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("FAKE_LLM_KEY", SECRET)
    servers = []

    def start(judge: Judge) -> FakeServer:
        servers.append(FakeServer(responder=judge).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def test_lexical_intruder_writes_documented_tables(run: Path) -> None:
    cfg = load_config(None, {"run_dir": str(run)})
    paths = score(run, cfg, scorers=["intruder"], progress=False)
    df = pl.read_parquet(paths["intruder"])
    ok = df.filter(pl.col("status") == "ok")
    assert ok.height == N_LAT - 2  # latents 0 and 1 have no examples
    assert np.allclose(ok["accuracy_chance"], 1 / N)
    want = expected_prompts(run)
    assert dict(zip(ok["latent"], ok["n"].cast(int), strict=True)) == want
    # each latent is triggered by one token (plus noise, which the weak bins show): members
    # mostly share it, a contrast intruder does not. Far above chance (0.2); measured 0.62
    assert ok["accuracy"].mean() > 0.45
    ex = pl.read_parquet(paths["intruder"].with_name("intruder.examples.parquet"))
    assert ex.height == sum(want.values()) * N
    per_prompt = ex.group_by("latent", "prompt").agg(pl.col("truth").sum(), pl.len())
    assert (per_prompt["truth"] == 1).all() and (per_prompt["len"] == N).all()
    intruders = ex.filter(pl.col("truth"))
    assert set(intruders["kind"]) <= {"random", "similar", "neighbour"}
    members = ex.filter(~pl.col("truth"))
    assert (members["kind"] == "activating").all()
    assert (members["quantile"] == members["prompt_quantile"]).all()
    doc = (DOCS / "score.md").read_text()
    for col in [*df.columns, *ex.columns]:
        base = col.split("_q")[0] if "_q" in col else col
        assert f"`{base}`" in doc, col
    assert "intruder" in set(summarize(run)["scorer"])


def test_internal_mode_draws_the_intruder_from_the_farthest_bin(run: Path) -> None:
    cfg = load_config(None, {"run_dir": str(run), "score.intruder.mode": "internal"})
    paths = score(run, cfg, scorers=["intruder"], progress=False)
    ex = pl.read_parquet(paths["intruder"].with_name("intruder.examples.parquet"))
    intruders = ex.filter(pl.col("truth"))
    assert (intruders["kind"] == "activating").all()
    q, pq = intruders["quantile"].to_numpy(), intruders["prompt_quantile"].to_numpy()
    assert np.array_equal(np.abs(q - pq), np.maximum(pq, 9 - pq))  # bins 0..9


def test_scripted_judges_right_scores_one_random_scores_chance(run: Path, fake) -> None:
    act = activating_latents(run)
    right = Judge(act, right=True)
    server = fake(right)
    paths = score(run, served(run, server), scorers=["intruder"], progress=False)
    df = pl.read_parquet(paths["intruder"]).filter(pl.col("status") == "ok")
    assert df.height == N_LAT - 2 and (df["accuracy"] == 1.0).all()
    n_prompts = len(right.truth)
    assert n_prompts == int(df["n"].sum()) == sum(expected_prompts(run).values())
    ex = pl.read_parquet(paths["intruder"].with_name("intruder.examples.parquet"))
    assert (ex["truth"] == ex["prediction"]).all()

    # the shuffle: the intruder's position is uniform over 1..n and never constant
    counts = np.bincount(right.truth, minlength=N + 1)[1:]
    assert (counts > 0).all()
    assert chisquare(counts).pvalue > 0.001, counts  # ~215 prompts, ~43 expected per position
    by_latent = ex.filter(pl.col("truth")).group_by("latent").agg(pl.col("position").n_unique())
    assert (by_latent["position"] > 1).all()  # no latent has its intruder always at one place
    # nothing but the excerpts varies: the text around them is the same in every prompt
    assert len({u.split("\n\n1.\n")[0] for u in right.users}) == 1
    for u in right.users:
        assert [int(m.group(1)) for m in BLOCK.finditer(u)] == list(range(1, N + 1))

    # a judge that guesses: accuracy near 1/n. Over ~215 prompts the binomial sd of the
    # accuracy is sqrt(0.2 * 0.8 / 215) = 0.027; 0.08 is 3 sd
    run2 = run.parent / "run2"
    shutil.copytree(run, run2, ignore=shutil.ignore_patterns("scores", "llm_cache.sqlite*"))
    guess = Judge(act, right=False)
    paths = score(run2, served(run2, fake(guess)), scorers=["intruder"], progress=False)
    ex = pl.read_parquet(paths["intruder"].with_name("intruder.examples.parquet"))
    hits = ex.filter(pl.col("truth") & pl.col("prediction")).height
    assert abs(hits / len(guess.truth) - 1 / N) < 0.08, hits


def test_prompts_never_depend_on_the_explanation(run: Path, fake) -> None:
    judge = Judge(activating_latents(run), right=True)
    server = fake(judge)
    cfg = served(run, server)
    score(run, cfg, scorers=["intruder"], latents=range(2, 8), progress=False)
    hits = server.hits
    assert hits == sum(k for lat, k in expected_prompts(run).items() if 2 <= lat < 8)
    src = run / "other.jsonl"
    src.write_text(
        "\n".join(json.dumps({"latent": i, "explanation": f"x{i}"}) for i in range(2, 8))
    )
    paths = rescore(run, cfg, src, scorers=["intruder"], progress=False)
    assert server.hits == hits  # the same prompts: every answer from the response cache
    df = pl.read_parquet(paths["intruder"]).filter(pl.col("explanation").str.starts_with("x"))
    assert df.height == 6 and (df["n_cached_requests"] == df["n_requests"]).all()


def test_contrast_intruder_borrows_an_unshown_windows_highlights(run: Path) -> None:
    """The contrast intruder's marks are those of an activating window of the prompt's bin
    that the prompt does NOT show (a shown member's exact marks would pair it with that
    member); a member's only when the bin has no other window."""
    cfg = load_config(None, {"run_dir": str(run)})
    ctx = ScoreContext(config=cfg.score, seed=0, llm_model="lexical", backend="lexical")
    scorer = IntruderScorer(ctx)
    vocab = vocab_for(DEMO_MODEL)
    [path] = (run / "examples").glob("*.parquet")
    hp = path.stem
    positions = []
    want = expected_prompts(run)
    for ex in iter_latent_examples(run, hp, vocab, ["test"], list(range(2, N_LAT))):
        prompts, why = scorer.prompts(ex, "test")
        assert why is None and len(prompts) == want[ex.latent]
        thr = cfg.score.highlight_threshold
        for p in prompts:
            members = [m for i, m in enumerate(p.masks) if i != p.intruder]
            intruder = p.masks[p.intruder]
            unshown = [
                highlight_mask(r["activations_norm"], thr)
                for r in ex.windows("test", "activating")
                if r["quantile"] == p.quantile and not any(r is q for q in p.rows)
            ]  # without the cache's token counts (no prepare) the donor is of the same bin
            assert any(np.array_equal(intruder, m) for m in unshown or members)
            assert p.rows[p.intruder]["kind"] != "activating"
            positions.append(p.intruder)
        again, _ = scorer.prompts(ex, "test")  # seeded: the same prompts every time
        assert [p.intruder for p in again] == [p.intruder for p in prompts]
    assert set(positions) == set(range(N))


def test_lexical_intruder_task_picks_the_least_shared_highlights() -> None:
    from autointerp.llm.lexical import intruder

    def ex(tokens: list[str], marks: list[int]) -> dict:
        return {"tokens": tokens, "highlighted": marks}

    task = {
        "kind": "intruder",
        "examples": [
            ex([" def", "x"], [1, 0]),
            ex(["a", " def"], [0, 1]),
            ex(["q", "z"], [1, 0]),
            ex(["Def", " y"], [1, 0]),
        ],
    }
    assert intruder(task) == {"intruder": 3, "scores": [0.666667, 0.666667, 0.0, 0.666667]}
