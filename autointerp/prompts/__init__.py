"""Prompt templates: plain text files beside this module, rendered with ``string.Template``.

Every prompt puts its shared part (system text, few-shot turns) first and the latent's own
material last, so vLLM's prefix cache reuses the shared part across latents.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from string import Template

from autointerp.llm.types import ChatMessage

FOLDER = Path(__file__).parent


@lru_cache(maxsize=64)
def text(name: str) -> str:
    """The raw text of ``<name>.txt`` (trailing newline stripped)."""
    path = FOLDER / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {name!r} in {FOLDER}")
    return path.read_text(encoding="utf-8").rstrip("\n")


def render(name: str, **values: object) -> str:
    """``<name>.txt`` with ``$field`` placeholders filled (a missing field raises KeyError)."""
    return Template(text(name)).substitute({k: str(v) for k, v in values.items()})


def fewshot(name: str) -> list[ChatMessage]:
    """Turns of a few-shot file: blocks headed ``### user`` / ``### assistant``."""
    turns: list[ChatMessage] = []
    role, lines = None, []
    for line in text(name).splitlines():
        if line.startswith("### "):
            if role is not None:
                turns.append(ChatMessage(role=role, content="\n".join(lines).strip()))
            role, lines = line[4:].strip(), []
        else:
            lines.append(line)
    if role is not None:
        turns.append(ChatMessage(role=role, content="\n".join(lines).strip()))
    return turns


def names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.txt"))
