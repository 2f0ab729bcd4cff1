"""Render delphi's default prompts (eai-delphi 0.1.3, a bench-only dependency) on our windows.

Nothing of delphi is copied here: its prompt modules are loaded from the installed package's
files, and the few functions that format windows (highlighting, the explainer's activation
lines, the classifier's "Example i:" batches, fuzzing's wrong highlights) are taken from its
source files at run time and executed as they are. Its package ``__init__`` files are not run
(they import vLLM, sparsify, faiss...), so ``pip install --no-deps eai-delphi==0.1.3`` is
enough. Settings are delphi 0.1.3's defaults (``delphi/config.py``, ``delphi/__main__.py``):
DefaultExplainer (threshold 0.3, activations shown, no CoT) on 40 train windows; detection and
fuzzing on 50 activating + 50 non-activating test windows, 5 windows per prompt; fuzzing
highlights ceil(mean count of nonzero activations) random silent tokens of non-activating
windows.
"""

from __future__ import annotations
import __future__

import ast
import importlib.util
import logging
import math
import random
import sys
import types
from collections import deque
from collections.abc import Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

VERSION = "0.1.3"
N_TRAIN, N_TEST, N_NON_ACTIVATING, PER_PROMPT, THRESHOLD = 40, 50, 50, 5, 0.3


def package_dir() -> Path:
    spec = importlib.util.find_spec("delphi")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            f"delphi is not installed: pip install --no-deps eai-delphi=={VERSION} "
            "(or drop --delphi)"
        )
    from importlib.metadata import version

    got = version("eai-delphi")
    if got != VERSION:
        raise SystemExit(f"eai-delphi {got} installed; this comparison is for {VERSION}")
    return Path(next(iter(spec.submodule_search_locations)))


def _load(path: Path, name: str) -> types.ModuleType:
    """A module from ``path`` under a private package name (relative imports resolve there)."""
    package = name.rsplit(".", 1)[0]
    if package not in sys.modules:
        pkg = types.ModuleType(package)
        pkg.__path__ = []  # type: ignore[attr-defined]
        sys.modules[package] = pkg
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def _extract(path: Path, names: Sequence[str], env: dict[str, Any]) -> dict[str, Any]:
    """Run only the named top-level functions / ``Class.method`` definitions (and the file's
    top-level constants) of a source file, in ``env``."""
    tree = ast.parse(path.read_text(), str(path))
    keep: list[ast.stmt] = []
    for node in tree.body:
        constant = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        if constant or (isinstance(node, ast.FunctionDef) and node.name in names):
            keep.append(node)
        elif isinstance(node, ast.ClassDef):
            for sub in node.body:
                if isinstance(sub, ast.FunctionDef) and f"{node.name}.{sub.name}" in names:
                    sub.name = f"{node.name}.{sub.name}".replace(".", "__")
                    keep.append(sub)
    module = ast.Module(body=keep, type_ignores=[])
    flags = __future__.annotations.compiler_flag
    exec(compile(module, str(path), "exec", flags=flags, dont_inherit=True), env)
    missing = [n for n in names if n.replace(".", "__") not in env]
    if missing:
        raise SystemExit(f"delphi {VERSION}: {missing} not found in {path}")
    return env


class Delphi:
    """delphi's prompt builders, bound to what they need."""

    def __init__(self) -> None:
        import torch

        root = package_dir()
        d = root / "explainers" / "default"
        _load(d / "prompts.py", "_delphi_default.prompts")
        builder = _load(d / "prompt_builder.py", "_delphi_default.prompt_builder")
        c = root / "scorers" / "classifier" / "prompts"
        self.detection_prompt = _load(c / "detection_prompt.py", "_delphi_cls.detection").prompt
        self.fuzz_prompt = _load(c / "fuzz_prompt.py", "_delphi_cls.fuzz").prompt
        env: dict[str, Any] = {
            "torch": torch,
            "random": random,
            "deque": deque,
            "groupby": groupby,
            "logger": logging.getLogger("delphi"),
            "build_prompt": builder.build_prompt,
        }
        _extract(
            root / "scorers" / "classifier" / "sample.py", ["_prepare_text", "_highlight"], env
        )
        _extract(
            root / "explainers" / "explainer.py",
            ["Explainer._highlight", "Explainer._join_activations"],
            env,
        )
        _extract(
            root / "explainers" / "default" / "default.py", ["DefaultExplainer._build_prompt"], env
        )
        _extract(
            root / "scorers" / "classifier" / "classifier.py", ["Classifier._build_prompt"], env
        )
        self.env = env
        explainer = types.SimpleNamespace(threshold=THRESHOLD, activations=True, cot=False)
        explainer._highlight = lambda *a: env["Explainer___highlight"](explainer, *a)
        explainer._join_activations = lambda *a: env["Explainer___join_activations"](explainer, *a)
        self.explainer = explainer

    @staticmethod
    def example(window: dict[str, Any]) -> types.SimpleNamespace:
        import torch

        acts = torch.tensor(list(window["activations"]), dtype=torch.float32)
        return types.SimpleNamespace(
            str_tokens=list(window["strings"]),
            activations=acts,
            normalized_activations=torch.tensor(list(window["activations_norm"])).float(),
            max_activation=float(acts.max()) if len(acts) else 0.0,
        )

    def explain(self, train: list[dict[str, Any]]) -> list[dict[str, str]]:
        examples = [self.example(w) for w in train[:N_TRAIN]]
        return self.env["DefaultExplainer___build_prompt"](self.explainer, examples)

    def _batches(self, texts: list[str], prompt: Any, explanation: str) -> list[list[dict]]:
        scorer = types.SimpleNamespace(prompt=prompt)
        build = self.env["Classifier___build_prompt"]
        rng = random.Random(42)  # delphi shuffles its samples with Random(seed=42)
        order = list(range(len(texts)))
        rng.shuffle(order)
        out = []
        for i in range(0, len(order), PER_PROMPT):
            batch = [types.SimpleNamespace(text=texts[j]) for j in order[i : i + PER_PROMPT]]
            out.append(build(scorer, explanation, batch))
        return out

    def detection(
        self, explanation: str, active: list[dict[str, Any]], silent: list[dict[str, Any]]
    ) -> list[list[dict]]:
        prep = self.env["_prepare_text"]
        texts = [
            prep(self.example(w), 0, THRESHOLD, False)[0]
            for w in active[:N_TEST] + silent[:N_NON_ACTIVATING]
        ]
        return self._batches(texts, self.detection_prompt, explanation)

    def fuzzing(
        self, explanation: str, active: list[dict[str, Any]], silent: list[dict[str, Any]]
    ) -> list[list[dict]]:
        prep = self.env["_prepare_text"]
        test = [self.example(w) for w in active[:N_TEST]]
        n_wrong = math.ceil(sum(int((e.activations > 0).sum()) for e in test) / max(len(test), 1))
        texts = [
            prep(self.example(w), n_wrong, THRESHOLD, True)[0] for w in silent[:N_NON_ACTIVATING]
        ]
        texts += [prep(e, 0, THRESHOLD, True)[0] for e in test]
        return self._batches(texts, self.fuzz_prompt, explanation)
