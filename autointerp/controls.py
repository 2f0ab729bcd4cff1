"""Random-baseline controls: the same pipeline on a coder or a subject model with random
weights, so every score is read against its floor (SAEs of random transformers score close to
trained ones: Heap et al., ICLR 2026).

``random-coder``: the run's coder in its own format and shape, every floating tensor redrawn
(seeded) from a normal with the tensor's own mean and standard deviation; every other file
(``cfg.json``, so TopK keeps ``k``) copied. ``random-model``: the subject model re-created
from its config with fresh initial weights (seeded), saved with its tokenizer. Either runs
cache -> sample -> explain -> score on a seeded sample of ``score.control_latents`` of the
run's explained latents into ``RUN_DIR/controls/<control>/`` with the run's config otherwise;
the summary shows each scorer's mean beside its control's (docs/score.md).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import torch

from autointerp.config import RunConfig

log = logging.getLogger(__name__)
CONTROLS = ("random-coder", "random-model")


def control_dir(run_dir: str | Path, control: str) -> Path:
    return Path(run_dir) / "controls" / control


def _redraw(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if not t.is_floating_point() or t.numel() == 0:
        return t
    x = t.double()
    std = float(x.std()) if t.numel() > 1 else 0.0
    noise = torch.randn(t.shape, generator=gen, dtype=torch.float64)
    return (float(x.mean()) + std * noise).to(t.dtype)


def randomize_weights(src: Path, dst: Path, seed: int) -> list[str]:
    """Copy the coder folder ``src`` to ``dst`` with every floating tensor of its weight
    files (.safetensors, .npz, .pt) redrawn; returns the tensors redrawn."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    dst.mkdir(parents=True, exist_ok=True)
    done = []
    for i, path in enumerate(sorted(p for p in src.iterdir() if p.is_file())):
        out = dst / path.name
        gen = torch.Generator().manual_seed(seed * 1009 + i)
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata()
                tensors = {k: f.get_tensor(k) for k in sorted(f.keys())}
            save_file({k: _redraw(v, gen) for k, v in tensors.items()}, str(out), metadata=meta)
        elif path.suffix == ".npz":
            arrays = dict(np.load(path))
            np.savez(
                out,
                **{k: _redraw(torch.from_numpy(v), gen).numpy() for k, v in sorted(arrays.items())},
            )
        elif path.suffix == ".pt":
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise ValueError(f"{path} is not a state dict: cannot build a random coder")
            torch.save({k: _redraw(v, gen) for k, v in sorted(state.items())}, out)
        else:
            shutil.copy2(path, out)
            continue
        done.append(path.name)
    if not done:
        raise ValueError(f"no weight file (.safetensors, .npz, .pt) in {src}: cannot randomise")
    return done


def random_coder(config: RunConfig, dst: Path) -> Path:
    """A random coder for every cached hookpoint of ``config`` under ``dst`` (one folder per
    hookpoint, the sparsify layout the loader reads)."""
    from autointerp.coders.loader import coder_folder

    for hp in config.cache.hookpoints:
        if (dst / hp.replace(":", "@")).is_dir():
            continue  # written by an earlier call (the same seed gives the same weights)
        src = coder_folder(config.coder.path, hp, config.coder.revision)
        names = randomize_weights(src, dst / hp.replace(":", "@"), config.seed)
        log.info("random coder for %s from %s (%s)", hp, src, ", ".join(names))
    return dst


def random_model(config: RunConfig, dst: Path) -> Path:
    """The subject model re-created from its config with seeded fresh weights, saved to
    ``dst`` with its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if (dst / "config.json").is_file():
        return dst
    s = config.subject
    kwargs = {"revision": s.revision, "local_files_only": s.local_files_only}
    torch.manual_seed(config.seed)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(s.model, **kwargs))
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(s.model, **kwargs).save_pretrained(dst)
    return dst


def sample_latents(run_dir: Path, hookpoint: str, n: int, seed: int) -> list[int]:
    """A seeded sample of ``n`` of the latents explained in the real run."""
    from autointerp.explainers.run import explanations_path

    path = explanations_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name} in {run_dir}: explain the run before its control")
    have = (
        pl.read_parquet(path, columns=["hookpoint", "latent"])
        .filter(pl.col("hookpoint") == hookpoint.replace(":", "@"))["latent"]
        .unique()
        .sort()
        .to_numpy()
    )
    if not len(have):
        raise ValueError(
            f"{path.name} in {run_dir} has no latent of {hookpoint}: explain that hookpoint "
            "before its control (or pass the --hookpoint that was explained)"
        )
    rng = np.random.default_rng(seed)
    return sorted(int(x) for x in rng.choice(have, min(n, len(have)), replace=False))


def run_control(
    run_dir: str | Path,
    config: RunConfig,
    control: str,
    scorers: Sequence[str] | None = None,
    progress: bool = True,
) -> dict[str, Path]:
    """Run ``control`` beside the run; returns its ``{scorer: scores/<scorer>.parquet}``."""
    from autointerp.cache import cache_activations
    from autointerp.explainers.run import explain
    from autointerp.sampling.build import build_examples
    from autointerp.scorers.run import score

    if control not in CONTROLS:
        raise ValueError(f"unknown control {control!r}: pick one of {', '.join(CONTROLS)}")
    run_dir = Path(run_dir)
    if len(config.cache.hookpoints) != 1:
        raise ValueError("controls need a run with one hookpoint: pass --hookpoint")
    hp = config.cache.hookpoints[0]
    latents = sample_latents(run_dir, hp, config.score.control_latents, config.seed)
    out = control_dir(run_dir, control)
    data = config.model_dump(mode="json")
    data["run_dir"] = str(out)
    if control == "random-coder":
        data["coder"] = {"path": str(random_coder(config, out / "coder")), "revision": None}
    else:
        data["subject"]["model"] = str(random_model(config, out / "model"))
        data["subject"]["revision"] = None
    cfg = RunConfig.model_validate(data)
    log.info("%s control: %d latents in %s", control, len(latents), out)
    cache_activations(cfg, progress=progress)
    build_examples(out, cfg, latents=latents, progress=progress)
    explain(out, cfg, latents=latents, progress=progress)
    return score(out, cfg, scorers=scorers, latents=latents, progress=progress)
