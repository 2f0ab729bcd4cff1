"""The intervention scorer's pre-pass: load the subject model and coder of a hookpoint, build
held-out prompts, calibrate alpha (scorers/calibration.py), generate clean and steered
completions (seeded sampling, batched), and store everything in
``<run_dir>/intervention/<hookpoint>.parquet`` (reused while the settings hash is the same)
plus the output views (output_views.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import polars as pl
import torch

from autointerp.output_views import lens_rows, write_views
from autointerp.scorers.calibration import Calibrator, held_out_prompts
from autointerp.subject.steering import Steering, sample

log = logging.getLogger(__name__)
STORE_SCHEMA: dict[str, pl.DataType] = {
    "latent": pl.Int32(),
    "settings": pl.String(),
    "alpha": pl.Float64(),
    "kl": pl.Float64(),
    "n_forward": pl.Int32(),
    "converged": pl.Boolean(),
    "prompts": pl.List(pl.String()),
    "clean": pl.List(pl.String()),
    "steered": pl.List(pl.String()),
}
_LOCK = threading.Lock()
BLOCK_LATENTS = 1024  # latents calibrated and generated together (bounds memory)


@dataclass
class Subject:
    model: Any
    tokenizer: Any
    coder: Any
    pad_id: int

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def token_strings(self, ids: list[int]) -> list[str]:
        return [self.tokenizer.decode([i]) for i in ids]


def store_path(run_dir: Path, hookpoint: str) -> Path:
    return Path(run_dir) / "intervention" / f"{hookpoint.replace(':', '@')}.parquet"


def cache_meta(run_dir: Path, hookpoint: str) -> dict[str, Any]:
    path = Path(run_dir) / "cache" / hookpoint.replace(":", "@") / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"no cache meta {path}: intervention needs the activation cache of {hookpoint} "
            "(run `autointerp cache` first)"
        )
    meta = json.loads(path.read_text())
    if not meta.get("coder"):
        raise ValueError(
            f"the cache of {hookpoint} names no coder ({path} 'coder'): intervention needs the "
            "coder's decoder rows; cache with a coder folder or hub id"
        )
    return meta


@lru_cache(maxsize=2)
def load(model: str, coder: str, hookpoint: str, device: str, dtype: str) -> Subject:
    from autointerp.coders.loader import load_coder
    from autointerp.config import SubjectConfig
    from autointerp.subject.model import load_subject

    lm, tok = load_subject(SubjectConfig(model=model, device=device, dtype=dtype))
    p = next(lm.parameters())
    sae = load_coder(coder, hookpoint, device=p.device, dtype=torch.float32)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    return Subject(lm, tok, sae, int(pad))


def settings_hash(cfg: Any, meta: dict[str, Any], seed: int) -> str:
    blob = {
        "cfg": cfg.model_dump(mode="json"),
        "model": meta.get("model"),
        "coder": meta.get("coder"),
        "seed": seed,
    }
    for k in ("surprisal_backend", "surprisal_model", "judge_trials", "judge_max_tokens"):
        blob["cfg"].pop(k, None)  # scoring only: the stored steering does not depend on them
    blob["splits"] = {"calibrate": "train", "generate": "test"}  # stores before were all test
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def read_store(run_dir: Path, hookpoint: str, settings: str) -> dict[int, dict[str, Any]]:
    path = store_path(run_dir, hookpoint)
    if not path.is_file():
        return {}
    df = pl.read_parquet(path).filter(pl.col("settings") == settings)
    return {int(r["latent"]): r for r in df.iter_rows(named=True)}


def write_store(run_dir: Path, hookpoint: str, rows: list[dict[str, Any]]) -> None:
    path = store_path(run_dir, hookpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pl.DataFrame(rows, schema=STORE_SCHEMA)
    if path.is_file():
        old = pl.read_parquet(path)
        keep = old.join(new.select("latent", "settings"), on=["latent", "settings"], how="anti")
        new = pl.concat([keep, new])
    tmp = path.with_suffix(".tmp")
    new.write_parquet(tmp)
    tmp.replace(path)


def generate(
    subj: Subject,
    hookpoint: str,
    cfg: Any,
    latents: list[int],
    prompts: dict[int, list[list[int]]],
    alphas: dict[int, float],
    seed: int,
) -> dict[int, tuple[list[str], list[str]]]:
    """Clean and steered completions of each latent's prompts; clean and steered draws share
    the generator seed (coupled sampling), so differences come from the steering."""
    rows = [(lat, p) for lat in latents for p in prompts.get(lat, [])]
    out: dict[int, tuple[list[str], list[str]]] = {lat: ([], []) for lat in latents}
    dec = subj.coder.decoder_rows.detach()
    device = next(subj.model.parameters()).device
    for s in range(0, len(rows), cfg.batch_rows):
        chunk = rows[s : s + cfg.batch_rows]
        plist = [p for _, p in chunk]
        lat = torch.tensor([lt for lt, _ in chunk], device=device)
        dirs = dec[lat.to(dec.device)].to(device, torch.float32)
        alpha = torch.tensor([alphas[lt] for lt, _ in chunk], device=device)
        gen_seed = seed * 1_000_003 + chunk[0][0]
        n, t = cfg.completion_tokens, cfg.temperature
        clean = sample(
            subj.model, plist, subj.pad_id, n, torch.Generator().manual_seed(gen_seed), t
        )
        with Steering(
            subj.model,
            hookpoint,
            dirs,
            alpha,
            mode=cfg.mode,
            positions=cfg.positions,
            coder=subj.coder,
            latents=lat,
        ):
            steered = sample(
                subj.model, plist, subj.pad_id, n, torch.Generator().manual_seed(gen_seed), t
            )
        for (lt, _), c, st in zip(chunk, clean, steered, strict=True):
            out[lt][0].append(subj.decode(c))
            out[lt][1].append(subj.decode(st))
    return out


def prepare_hookpoint(
    run_dir: Path, hookpoint: str, cfg: Any, latents: list[int], seed: int
) -> dict[int, dict[str, Any]]:
    """Every stored latent of ``hookpoint`` (``latents`` computed if missing, ``BLOCK_LATENTS``
    at a time: the clean log-probs ``[rows, vocab]`` of a block stay bounded, and each block
    is stored as it ends)."""
    meta = cache_meta(run_dir, hookpoint)
    settings = settings_hash(cfg, meta, seed)
    with _LOCK:
        stored = read_store(run_dir, hookpoint, settings)
        todo = [lat for lat in latents if lat not in stored]
        if not todo:
            return stored
        subj = load(meta["model"], meta["coder"], hookpoint, cfg.device, cfg.dtype)
        for s in range(0, len(todo), BLOCK_LATENTS):
            block = todo[s : s + BLOCK_LATENTS]
            _prepare_block(run_dir, hookpoint, cfg, block, seed, settings, subj)
            n = s + len(block)
            log.info("intervention: calibrated %d/%d latents of %s", n, len(todo), hookpoint)
        return read_store(run_dir, hookpoint, settings)


def _prepare_block(
    run_dir: Path,
    hookpoint: str,
    cfg: Any,
    todo: list[int],
    seed: int,
    settings: str,
    subj: Subject,
) -> None:
    """Calibrate alpha and compute the steering view on ``train`` prompts, generate the
    completions that are scored from ``test`` prompts; store ``todo`` and their output views
    (the ``output`` explainer reads the views: they never come from a scored prompt)."""
    sizes = (cfg.n_prompts, cfg.prompt_max_tokens, cfg.prompt_min_tokens)
    train = held_out_prompts(run_dir, hookpoint, todo, *sizes, split="train")
    prompts = held_out_prompts(run_dir, hookpoint, todo, *sizes, split="test")
    cal = Calibrator(
        subj.model,
        hookpoint,
        subj.pad_id,
        mode=cfg.mode,
        positions=cfg.positions,
        coder=subj.coder,
        batch_rows=cfg.batch_rows,
    )
    dec = subj.coder.decoder_rows.detach().float()
    rows_t = dec[torch.tensor(todo, device=dec.device)]
    found = cal.calibrate(todo, rows_t, train, cfg.target_kl, cfg.kl_tol, cfg.max_steps, cfg.view_k)
    alphas = {lat: c.alpha for lat, c in found.items()}
    steerable = [lat for lat in todo if prompts.get(lat) and math.isfinite(alphas[lat])]
    texts = generate(subj, hookpoint, cfg, steerable, prompts, alphas, seed)
    new = []
    for lat in todo:
        c = found[lat]
        clean, steered = texts.get(lat, ([], []))
        new.append(
            {
                "latent": lat,
                "settings": settings,
                "alpha": c.alpha,
                "kl": c.kl,
                "n_forward": c.n_forward,
                "converged": c.converged,
                "prompts": [subj.decode(p) for p in prompts.get(lat, [])],
                "clean": clean,
                "steered": steered,
            }
        )
    write_store(run_dir, hookpoint, new)
    views = lens_rows(hookpoint, todo, subj.model, rows_t, subj.token_strings, cfg.view_k)
    for v in views:
        c = found[v["latent"]]
        if c.steer_top:
            v["steer_top"] = subj.token_strings(c.steer_top)
            v["steer_top_delta"] = c.steer_delta
    write_views(run_dir, hookpoint, views)
    log.debug("intervention: %d forward calls for %d latents", cal.forward_calls, len(todo))
