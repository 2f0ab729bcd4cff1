"""Find, download, detect and load a sparse coder; check it fits its hookpoint.

The format is detected from the files (names, then tensor names and shapes), never from a
folder or repository name.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import torch
from huggingface_hub import list_repo_files, snapshot_download

from autointerp.coders import dictionary_learning, gemma_scope, planted, sae_lens, sparsify
from autointerp.coders._io import safetensors_keys
from autointerp.coders.base import CoderLoadError, CoderShapeError, SparseCoder

log = logging.getLogger(__name__)

LOADERS: dict[str, Callable[[Path], SparseCoder]] = {
    "sparsify": sparsify.load,
    "sae_lens": sae_lens.load,
    "gemma_scope": gemma_scope.load,
    "dictionary_learning": dictionary_learning.load,
    "planted": planted.load,
}
NEEDS = (
    "sparsify: cfg.json + sae.safetensors; sae_lens: cfg.json + sae_weights.safetensors; "
    "gemma_scope: params.npz or params.safetensors; dictionary_learning: ae.pt + config.json; "
    "planted: planted.json"
)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:.+)?$")

__all__ = [
    "CoderLoadError",
    "CoderShapeError",
    "check_width",
    "coder_folder",
    "detect_format",
    "load_coder",
]


def _sniff_safetensors(path: Path) -> str | None:
    """A format from the tensor names of an unusually named safetensors file."""
    keys = safetensors_keys(path)
    if {"encoder.weight", "W_dec", "b_dec"} <= keys:
        return "sparsify"
    if {"w_enc", "w_dec", "threshold"} <= keys:
        return "gemma_scope"
    if {"W_enc", "W_dec", "b_dec"} <= keys:
        return "sae_lens"
    return None


def detect_format(folder: Path) -> str:
    """Which on-disk format the coder in ``folder`` is in (from its files, never its name)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CoderLoadError(f"coder folder {folder} does not exist: pass an existing folder")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    if planted.FILE_NAME in names:
        return "planted"
    if "sae.safetensors" in names and "cfg.json" in names:
        if "encoder.weight" in safetensors_keys(folder / "sae.safetensors"):
            return "sparsify"
        fmt = _sniff_safetensors(folder / "sae.safetensors")
        if fmt:
            return fmt
    if "sae_weights.safetensors" in names and "cfg.json" in names:
        return "sae_lens"
    if "params.npz" in names or "params.safetensors" in names:
        return "gemma_scope"
    if "ae.pt" in names:
        return "dictionary_learning"
    if "cfg.json" in names:
        for st in sorted(n for n in names if n.endswith(".safetensors")):
            fmt = _sniff_safetensors(folder / st)
            if fmt in ("sparsify", "sae_lens"):
                raise CoderLoadError(
                    f"{folder} holds cfg.json + {st}, which looks like {fmt}: rename {st} to "
                    f"{'sae.safetensors' if fmt == 'sparsify' else 'sae_weights.safetensors'}"
                )
    found = ", ".join(sorted(names)) or "no files"
    raise CoderLoadError(f"no sparse coder recognised in {folder} (found: {found}); {NEEDS}")


def _is_coder_dir(folder: Path) -> bool:
    try:
        detect_format(folder)
    except CoderLoadError:
        return False
    return True


def _hookpoint_names(hookpoint: str) -> list[str]:
    """Folder names a hookpoint's coder may live under, best first: the spec, its dirname
    form, the bare module path, the path without leading components (``model.layers.1`` ->
    ``layers.1``, sparsify's naming), and for an unqualified spec the ``@input`` form."""
    spec = hookpoint.replace("@", ":")
    path, _, capture = spec.partition(":")
    names = [spec, spec.replace(":", "@"), path]
    parts = path.split(".")
    names += [".".join(parts[i:]) for i in range(1, len(parts) - 1) if not parts[i].isdigit()]
    if not capture:
        names.append(f"{path}@input")
    return list(dict.fromkeys(names))


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _resolve_local(folder: Path, hookpoint: str | None) -> Path:
    """The folder holding the coder: ``folder`` itself or its sub-folder for ``hookpoint``."""
    if not folder.is_dir():
        raise CoderLoadError(f"coder path {folder} is not a folder: pass the folder holding it")
    if _is_coder_dir(folder):
        return folder
    subdirs = _subdirs(folder)
    if hookpoint is None:
        coders = [d for d in subdirs if _is_coder_dir(folder / d)]
        if len(coders) == 1:
            return folder / coders[0]
        if not coders:
            detect_format(folder)  # raises with the files found and what each format needs
        raise CoderLoadError(
            f"{folder} holds coders for several hookpoints ({', '.join(coders)}): "
            "pass the hookpoint to pick one"
        )
    for name in _hookpoint_names(hookpoint):
        if name in subdirs and _is_coder_dir(folder / name):
            return folder / name
    if not subdirs:
        detect_format(folder)
    raise CoderLoadError(
        f"no coder for hookpoint {hookpoint} in {folder} (sub-folders: {', '.join(subdirs)}): "
        f"put it in {folder / hookpoint.replace(':', '@')} or pass the coder's own folder"
    )


def _download(path: str, hookpoint: str | None, revision: str | None) -> Path:
    repo_id, _, subfolder = path.partition(":")
    subfolder = subfolder.strip("/")
    allow: list[str] | None = None
    if subfolder:
        allow = [f"{subfolder}/*"]
    elif hookpoint is not None:
        try:
            files = list_repo_files(repo_id, revision=revision)
        except Exception as e:  # noqa: BLE001 - offline: fall back to the cached snapshot
            log.info("cannot list files of %s (%s); downloading the whole snapshot", repo_id, e)
            files = None
        if files is not None:
            tops = {f.split("/", 1)[0] for f in files if "/" in f}
            match = next((n for n in _hookpoint_names(hookpoint) if n in tops), None)
            allow = [f"{match}/*"] if match else [f for f in files if "/" not in f]
    log.info("downloading coder %s (revision %s, files %s)", repo_id, revision, allow or "all")
    try:
        local = snapshot_download(repo_id, revision=revision, allow_patterns=allow)
    except Exception as e:  # noqa: BLE001 - hub errors have many types
        msg = str(e).splitlines()[0] if str(e) else ""
        raise CoderLoadError(
            f"cannot download coder {repo_id} from the Hugging Face hub ({type(e).__name__}: "
            f"{msg}): check the id, the revision, the network and HF_TOKEN"
        ) from e
    root = Path(local)
    return root / subfolder if subfolder else root


def coder_folder(path: str, hookpoint: str | None = None, revision: str | None = None) -> Path:
    """The local folder holding the coder of ``hookpoint`` (downloaded from the hub if
    ``path`` is a hub id)."""
    local = Path(path).expanduser()
    if local.exists():
        return _resolve_local(local, hookpoint)
    if _HUB_ID.match(path) and not path.startswith((".", "/", "~")):
        root = _download(path, hookpoint, revision)
        if not root.is_dir():
            raise CoderLoadError(f"{path}: the repository has no folder {root.name}")
        return _resolve_local(root, hookpoint)
    raise CoderLoadError(
        f"coder path {path} does not exist locally and is not a hub id: "
        "pass an existing folder or org/repo[:subfolder]"
    )


def load_coder(
    path: str,
    hookpoint: str | None = None,
    revision: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> SparseCoder:
    """Load a coder from a local folder, a folder of per-hookpoint folders, or a hub id
    (``org/repo`` or ``org/repo:subfolder``)."""
    folder = coder_folder(path, hookpoint, revision)
    fmt = detect_format(folder)
    coder = LOADERS[fmt](folder)
    coder.source = path
    if folder.name.endswith("@input") or (hookpoint or "").replace("@", ":").endswith(":input"):
        coder.capture = "input"  # the hookpoint (or its folder) says the coder reads inputs
    coder = coder.to(device=device, dtype=dtype).eval()
    log.info("loaded %s coder from %s: %s", fmt, folder, coder.extra_repr())
    return coder


def check_width(coder: SparseCoder, width: int, hookpoint: str) -> None:
    """Fail early when the coder's ``d_in`` is not the hookpoint's width."""
    if coder.d_in != width:
        raise CoderShapeError(
            f"coder d_in is {coder.d_in} but hookpoint {hookpoint} has width {width}: "
            "pick the coder trained on this hookpoint/model"
        )
