"""Parse a latent subset given on the command line: ``0:1000``, ``1,2,3`` or ``@file.txt``."""

from __future__ import annotations

import re
from pathlib import Path


def parse_latents(spec: str | None) -> list[int] | None:
    """``a:b`` (half-open range), comma list (ranges allowed inside), or ``@path`` holding
    ints separated by whitespace or commas. ``None``/empty means every latent."""
    if spec is None or not spec.strip():
        return None
    spec = spec.strip()
    if spec.startswith("@"):
        path = Path(spec[1:])
        if not path.is_file():
            raise ValueError(f"latent file {path} does not exist")
        spec = ",".join(t for t in re.split(r"[\s,]+", path.read_text()) if t)
        if not spec:
            raise ValueError(f"latent file {path} holds no latent index")
    out: list[int] = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        if ":" in item:
            lo, _, hi = item.partition(":")
            if not lo.strip().isdigit() or not hi.strip().isdigit() or int(hi) <= int(lo):
                raise ValueError(f"bad latent range '{item}': write start:end with start < end")
            out.extend(range(int(lo), int(hi)))
        elif item.isdigit():
            out.append(int(item))
        else:
            raise ValueError(f"bad latent '{item}': use 0:1000, 1,2,3 or @file.txt")
    return out
