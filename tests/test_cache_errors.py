"""Each bad input fails before heavy work with a one-line error naming the problem and the fix,
and leaves earlier results as they were."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from coder_files import write_sparsify
from test_cache import Setup, make_setup
from typer.main import get_group

from autointerp.cache import CacheMismatchError, CacheMissingError, cache_activations
from autointerp.cache.reader import ActivationCache
from autointerp.cli import app
from autointerp.coders.base import CoderLoadError, CoderShapeError
from autointerp.data.dataset import DatasetError
from autointerp.subject.hookpoints import UnknownHookpointError
from autointerp.subject.model import SubjectLoadError


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(get_group(app), ["cache", "--no-progress", *args])
    return result.exit_code, result.output


def assert_untouched(run_dir: Path) -> None:
    assert not (run_dir / "cache").exists() and not (run_dir / "run.yaml").exists()


@pytest.fixture
def s(tmp_path: Path, tiny_model_dir: Path) -> Setup:
    return make_setup(tmp_path, tiny_model_dir, **{"cache.hookpoints": ["model.layers.1"]})


def test_unknown_hookpoint(s: Setup) -> None:
    cfg = s.config(**{"cache.hookpoints": ["model.layer.1"]})
    with pytest.raises(UnknownHookpointError, match="model.layers.1"):
        cache_activations(cfg, progress=False)
    assert_untouched(cfg.run_dir)
    code, out = cli("-c", str(s.yaml()), "--hookpoint", "model.layerz.1")
    assert code == 2 and "unknown hookpoint 'model.layerz.1'" in out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "pick one" in errors[0]


def test_d_in_mismatch(s: Setup) -> None:
    write_sparsify(s.root / "narrow", 16, 32, k=2)
    cfg = s.config(**{"coder.path": str(s.root / "narrow")})
    with pytest.raises(CoderShapeError, match="d_in is 16 but hookpoint model.layers.1 has width"):
        cache_activations(cfg, progress=False)
    assert_untouched(cfg.run_dir)


@pytest.mark.parametrize("content", ["", "x"])
def test_empty_or_too_short_dataset(s: Setup, content: str) -> None:
    (s.root / "empty.txt").write_text(content)
    cfg = s.config(**{"dataset.source": str(s.root / "empty.txt")})
    with pytest.raises(DatasetError, match="fewer than one window"):
        cache_activations(cfg, progress=False)
    assert_untouched(cfg.run_dir)


def test_missing_files(s: Setup) -> None:
    cases = [
        ({"dataset.source": str(s.root / "nope.jsonl")}, DatasetError, "does not exist"),
        ({"coder.path": str(s.root / "no_sae")}, CoderLoadError, "does not exist"),
        ({"subject.model": str(s.root / "no_model")}, SubjectLoadError, "does not exist"),
    ]
    for extra, error, words in cases:
        cfg = s.config(**extra)
        with pytest.raises(error, match=words):
            cache_activations(cfg, progress=False)
        assert_untouched(cfg.run_dir)
    code, out = cli("-c", str(s.yaml()), "--dataset", str(s.root / "nope.txt"))
    assert code == 2 and "nope.txt does not exist" in out


def test_reading_a_missing_cache(s: Setup) -> None:
    with pytest.raises(CacheMissingError, match="run `autointerp cache"):
        ActivationCache(s.root / "run", "model.layers.1")


def test_other_config_in_same_run_dir_is_refused(s: Setup) -> None:
    cfg = s.config()
    cache_activations(cfg, progress=False)
    root = cfg.run_dir / "cache" / "model.layers.1"
    before = {p: p.read_bytes() for p in [*root.rglob("*.*"), cfg.run_dir / "run.yaml"]}
    other = s.config(**{"cache.n_tokens": 512})
    with pytest.raises(CacheMismatchError, match="new --run-dir"):
        cache_activations(other, progress=False)
    assert {p: p.read_bytes() for p in before} == before
    code, out = cli("-c", str(s.yaml()), "--n-tokens", "512")
    assert code == 2 and "different config" in out
