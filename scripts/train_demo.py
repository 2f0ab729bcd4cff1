"""Train the bundled demo subject model and its sparse autoencoder, on CPU, from scratch.

Everything is trained on the Python standard library's own source (``autointerp.data.stdlib``),
so the script needs no download and every machine can rerun it:

1. a byte-level BPE tokenizer (``<|bos|>``, ``<|eos|>``);
2. a 2-layer Llama causal LM on windows ``[BOS] + ctx_len-1`` tokens of the concatenated
   token stream (files separated by EOS), the same convention the activation cache uses;
3. residual-stream activations at ``model.layers.1`` (output of the last decoder layer, before
   the final norm), BOS position excluded;
4. a TopK sparse autoencoder (AuxK loss against dead latents), saved in the EleutherAI
   ``sparsify`` on-disk layout.

Usage (16 minutes with the defaults on a 2-core machine shared with other jobs)::

    python scripts/train_demo.py --out-dir autointerp/assets/demo
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from autointerp.data.stdlib import stdlib_texts

BOS = "<|bos|>"
EOS = "<|eos|>"
HOOKPOINT = "model.layers.1"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------------------------
# 1. tokenizer
# --------------------------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Byte-level BPE on ``texts``; adds BOS in front of every encoded text (like Llama)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        min_frequency=2,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=256,
        clean_up_tokenization_spaces=False,
    )


def token_stream(tok: PreTrainedTokenizerFast, texts: list[str]) -> torch.Tensor:
    """All ``texts`` tokenized (no special tokens) and concatenated, each followed by EOS."""
    encodings = tok.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    eos = tok.eos_token_id
    ids: list[int] = []
    for enc in encodings:
        ids.extend(enc.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def make_windows(stream: torch.Tensor, ctx_len: int, bos_id: int) -> torch.Tensor:
    """Non-overlapping windows ``[BOS] + ctx_len-1`` consecutive tokens of ``stream``."""
    body = ctx_len - 1
    n = stream.numel() // body
    chunks = stream[: n * body].view(n, body)
    bos = torch.full((n, 1), bos_id, dtype=stream.dtype)
    return torch.cat([bos, chunks], dim=1)


def unigram_entropy(stream: torch.Tensor, vocab_size: int) -> float:
    """Entropy (nats/token) of the unigram distribution of ``stream``: a no-context baseline."""
    counts = torch.bincount(stream, minlength=vocab_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


# --------------------------------------------------------------------------------------------
# 2. language model
# --------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, warmup: int, peak: float, floor_frac: float = 0.1) -> float:
    """Linear warmup then cosine decay to ``floor_frac * peak``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return peak * (floor_frac + (1 - floor_frac) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.inference_mode()
def lm_loss(model: LlamaForCausalLM, windows: torch.Tensor, batch_size: int = 64) -> float:
    """Mean next-token cross-entropy (nats/token) over all predicted positions of ``windows``."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        batch = windows[i : i + batch_size]
        logits = model(input_ids=batch).logits[:, :-1]
        targets = batch[:, 1:]
        loss = F.cross_entropy(
            logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += targets.numel()
    return total / count


def train_lm(
    tok: PreTrainedTokenizerFast,
    train_windows: torch.Tensor,
    val_windows: torch.Tensor,
    args: argparse.Namespace,
) -> tuple[LlamaForCausalLM, dict[str, float]]:
    """Train the demo Llama on random batches of ``train_windows``; return it and its stats."""
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=256,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"LM: {n_params / 1e6:.2f}M parameters, {len(train_windows)} train windows")

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lm_lr,
        betas=(0.9, 0.95),
    )
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(train_windows), generator=gen)
    cursor = 0
    start = time.perf_counter()
    model.train()
    ema = None
    for step in range(args.lm_steps):
        if cursor + args.lm_batch > len(order):
            order = torch.randperm(len(train_windows), generator=gen)
            cursor = 0
        batch = train_windows[order[cursor : cursor + args.lm_batch]]
        cursor += args.lm_batch
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.lm_steps, args.lm_warmup, args.lm_lr)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.lm_bf16):
            loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        current = float(loss.detach())
        ema = current if ema is None else 0.95 * ema + 0.05 * current
        if step % 50 == 0 or step == args.lm_steps - 1:
            elapsed = time.perf_counter() - start
            log(f"LM step {step:5d}/{args.lm_steps} loss {ema:.3f} ({elapsed:.0f}s)")
    seconds = time.perf_counter() - start
    val = lm_loss(model, val_windows)
    model.eval()
    tokens_seen = args.lm_steps * args.lm_batch * train_windows.size(1)
    log(f"LM done in {seconds:.0f}s; validation loss {val:.3f} nats/token")
    stats = {
        "lm_parameters": n_params,
        "lm_train_tokens_seen": tokens_seen,
        "lm_train_seconds": seconds,
        "lm_val_loss": val,
        "lm_final_train_loss_ema": ema or float("nan"),
    }
    return model, stats


# --------------------------------------------------------------------------------------------
# 3. activations
# --------------------------------------------------------------------------------------------


@torch.inference_mode()
def collect_activations(
    model: LlamaForCausalLM, windows: torch.Tensor, batch_size: int = 64
) -> torch.Tensor:
    """Residual stream at ``model.layers.1`` (output of that layer, before the final norm),
    for every position but 0 (BOS) of ``windows``, as ``[n_windows * (ctx_len-1), d]``."""
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: object, output: object) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        captured.append(hidden[:, 1:].reshape(-1, hidden.size(-1)).float().clone())

    model.eval()
    handle = model.model.layers[1].register_forward_hook(hook)
    try:
        for i in range(0, len(windows), batch_size):
            # the base model only: the LM head is not needed for the activations
            model.model(input_ids=windows[i : i + batch_size])
    finally:
        handle.remove()
    return torch.cat(captured)


# --------------------------------------------------------------------------------------------
# 4. sparse autoencoder
# --------------------------------------------------------------------------------------------


@dataclass
class TopKSAE:
    """Parameters of a TopK SAE in the sparsify layout."""

    W_enc: torch.Tensor  # [n_latents, d_in]
    b_enc: torch.Tensor  # [n_latents]
    W_dec: torch.Tensor  # [n_latents, d_in]
    b_dec: torch.Tensor  # [d_in]
    k: int

    def parameters(self) -> list[torch.Tensor]:
        return [self.W_enc, self.b_enc, self.W_dec, self.b_dec]

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.linear(x - self.b_dec, self.W_enc, self.b_enc))

    def decode(self, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(pre_acts, top values, top indices)`` (dense autograd; used for evaluation)."""
        pre = self.pre_acts(x)
        values, indices = pre.topk(self.k, dim=-1, sorted=False)
        return pre, values, indices

    def gathered_acts(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Pre-activations (after ReLU) of only the latents ``indices`` [B, m], with autograd.

        Equal to ``pre_acts(x).gather(1, indices)``, but its backward touches only the selected
        encoder rows instead of all of them: the TopK selection itself is done without grad.
        """
        rows = F.embedding(indices, self.W_enc)  # [B, m, d]
        dots = torch.bmm(rows, (x - self.b_dec).unsqueeze(-1)).squeeze(-1)
        return F.relu(dots + F.embedding(indices, self.b_enc.unsqueeze(1)).squeeze(-1))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_parallel_decoder_grad(self) -> None:
        """Project out the part of each decoder row's gradient along the row (unit-norm rows)."""
        if self.W_dec.grad is None:
            return
        parallel = (self.W_dec.grad * self.W_dec).sum(dim=1, keepdim=True)
        self.W_dec.grad -= parallel * self.W_dec


def init_sae(acts: torch.Tensor, n_latents: int, k: int, seed: int) -> TopKSAE:
    d_in = acts.size(1)
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)
    W_enc = (torch.rand(n_latents, d_in, generator=gen) * 2 - 1) * bound
    W_enc /= W_enc.norm(dim=1, keepdim=True)
    # small encoder rows relative to the data scale so the first pre-activations are moderate
    W_dec = W_enc.clone()
    b_dec = acts[: min(len(acts), 200_000)].median(dim=0).values.clone()
    sae = TopKSAE(
        W_enc=W_enc.requires_grad_(),
        b_enc=torch.zeros(n_latents).requires_grad_(),
        W_dec=W_dec.requires_grad_(),
        b_dec=b_dec.requires_grad_(),
        k=k,
    )
    return sae


@torch.no_grad()
def evaluate_sae(sae: TopKSAE, acts: torch.Tensor, batch_size: int = 8192) -> dict[str, float]:
    """FVU, L0, and per-latent firing on ``acts``."""
    mean = acts.mean(dim=0)
    err, var = 0.0, 0.0
    fired = torch.zeros(sae.W_enc.size(0), dtype=torch.long)
    l0 = 0.0
    for i in range(0, len(acts), batch_size):
        x = acts[i : i + batch_size]
        _, values, indices = sae.forward(x)
        recon = sae.decode(values, indices) + sae.b_dec
        err += float(((x - recon) ** 2).sum())
        var += float(((x - mean) ** 2).sum())
        active = values > 0
        l0 += float(active.sum())
        fired += torch.bincount(indices[active], minlength=fired.numel())
    return {
        "fvu": err / var,
        "l0": l0 / len(acts),
        "dead_fraction": float((fired == 0).float().mean()),
        "n_tokens": float(len(acts)),
    }


def train_sae(
    train_acts: torch.Tensor, val_acts: torch.Tensor, args: argparse.Namespace
) -> tuple[TopKSAE, dict[str, float]]:
    """TopK SAE with AuxK loss (dead latents explain the residual), decoder rows unit norm."""
    torch.manual_seed(args.seed)
    n_latents, k = args.num_latents, args.k
    d_in = train_acts.size(1)
    sae = init_sae(train_acts, n_latents, k, args.seed)
    k_aux = d_in // 2
    dead_after = args.sae_dead_tokens
    opt = torch.optim.Adam(sae.parameters(), lr=args.sae_lr, betas=(0.9, 0.999))
    n = len(train_acts)
    steps_per_epoch = n // args.sae_batch
    total = steps_per_epoch * args.sae_epochs
    since_fired = torch.zeros(n_latents, dtype=torch.long)
    gen = torch.Generator().manual_seed(args.seed + 1)
    start = time.perf_counter()
    step = 0
    for epoch in range(args.sae_epochs):
        order = torch.randperm(n, generator=gen)
        for j in range(steps_per_epoch):
            x = train_acts[order[j * args.sae_batch : (j + 1) * args.sae_batch]]
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, args.sae_warmup, args.sae_lr, floor_frac=0.0)
            with torch.no_grad():
                pre = sae.pre_acts(x)
                indices = pre.topk(k, dim=-1, sorted=False).indices
            values = sae.gathered_acts(x, indices)
            recon = sae.decode(values, indices) + sae.b_dec
            residual = x - recon
            total_var = ((x - x.mean(dim=0)) ** 2).sum()
            fvu = (residual**2).sum() / total_var

            with torch.no_grad():
                since_fired += len(x)
                since_fired[indices[values > 0]] = 0
                dead_ids = (since_fired >= dead_after).nonzero().squeeze(1)
            n_dead = dead_ids.numel()
            if n_dead > 0:
                # AuxK: the top dead latents reconstruct what the live ones missed
                with torch.no_grad():
                    top = pre[:, dead_ids].topk(min(k_aux, n_dead), dim=-1, sorted=False).indices
                    aux_idx = dead_ids[top]
                aux_recon = sae.decode(sae.gathered_acts(x, aux_idx), aux_idx)
                target = residual.detach()
                aux_var = ((target - target.mean(0)) ** 2).sum()
                aux_fvu = ((aux_recon - target) ** 2).sum() / aux_var
                loss = fvu + args.aux_coef * aux_fvu
            else:
                loss = fvu
            opt.zero_grad(set_to_none=True)
            loss.backward()
            sae.remove_parallel_decoder_grad()
            opt.step()
            sae.normalize_decoder()
            if step % 200 == 0 or step == total - 1:
                log(
                    f"SAE step {step:5d}/{total} epoch {epoch} fvu {float(fvu.detach()):.4f} "
                    f"dead {n_dead / n_latents:.3f} ({time.perf_counter() - start:.0f}s)"
                )
            step += 1
    seconds = time.perf_counter() - start
    for p in sae.parameters():
        p.requires_grad_(False)
    stats = evaluate_sae(sae, val_acts)
    log(f"SAE done in {seconds:.0f}s; {stats}")
    out = {
        "sae_train_tokens": n,
        "sae_epochs": args.sae_epochs,
        "sae_steps": total,
        "sae_train_seconds": seconds,
        "sae_val_fvu": stats["fvu"],
        "sae_val_l0": stats["l0"],
        "sae_val_tokens": int(stats["n_tokens"]),
    }
    return sae, out


def save_sae(sae: TopKSAE, folder: Path) -> None:
    """Write ``cfg.json`` and ``sae.safetensors`` in the EleutherAI sparsify layout."""
    folder.mkdir(parents=True, exist_ok=True)
    n_latents, d_in = sae.W_enc.shape
    cfg = {
        "expansion_factor": n_latents // d_in,
        "normalize_decoder": True,
        "num_latents": n_latents,
        "k": sae.k,
        "multi_topk": False,
        "skip_connection": False,
        "transcode": False,
        "d_in": d_in,
    }
    (folder / "cfg.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tensors = {
        "encoder.weight": sae.W_enc.detach().float().contiguous(),
        "encoder.bias": sae.b_enc.detach().float().contiguous(),
        "W_dec": sae.W_dec.detach().float().contiguous(),
        "b_dec": sae.b_dec.detach().float().contiguous(),
    }
    save_file(tensors, str(folder / "sae.safetensors"))


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out-dir", type=Path, default=Path("autointerp/assets/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is far faster than 2 on a busy 2-core machine (OpenMP stalls)",
    )
    p.add_argument("--vocab-size", type=int, default=4096)
    p.add_argument("--ctx-len", type=int, default=128)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--intermediate", type=int, default=1024)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lm-steps", type=int, default=600)
    p.add_argument("--lm-batch", type=int, default=16, help="windows per LM step")
    p.add_argument(
        "--lm-bf16",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="bfloat16 autocast for LM training (weights stay float32)",
    )
    p.add_argument("--lm-lr", type=float, default=4e-3)
    p.add_argument("--lm-warmup", type=int, default=40)
    p.add_argument("--sae-tokens", type=int, default=600_000, help="training activations")
    p.add_argument("--dead-eval-tokens", type=int, default=300_000, help="tokens for dead count")
    p.add_argument("--num-latents", type=int, default=4096)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--sae-epochs", type=int, default=2)
    p.add_argument("--sae-batch", type=int, default=1024)
    p.add_argument("--sae-lr", type=float, default=1e-3)
    p.add_argument("--sae-warmup", type=int, default=100)
    p.add_argument("--sae-dead-tokens", type=int, default=100_000, help="AuxK dead threshold")
    p.add_argument("--aux-coef", type=float, default=1 / 32)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    t0 = time.perf_counter()
    torch.set_num_threads(args.threads)
    random.seed(args.seed)
    torch.manual_seed(args.seed)

    log("reading the standard library")
    train_texts = list(stdlib_texts("train"))
    val_texts = list(stdlib_texts("validation"))
    tok = train_tokenizer(train_texts, args.vocab_size)
    train_stream = token_stream(tok, train_texts)
    val_stream = token_stream(tok, val_texts)
    log(
        f"tokenizer: vocab {len(tok)}; {train_stream.numel()} train tokens "
        f"({len(train_texts)} files), {val_stream.numel()} validation tokens ({len(val_texts)})"
    )
    train_windows = make_windows(train_stream, args.ctx_len, tok.bos_token_id)
    val_windows = make_windows(val_stream, args.ctx_len, tok.bos_token_id)
    entropy = unigram_entropy(train_stream, len(tok))
    log(f"unigram entropy {entropy:.3f} nats/token")

    model, lm_stats = train_lm(tok, train_windows, val_windows, args)

    # SAE activations: a seeded subset of the training windows; validation: the held-out files
    t_act = time.perf_counter()
    gen = torch.Generator().manual_seed(args.seed + 2)
    order = torch.randperm(len(train_windows), generator=gen)
    per_window = args.ctx_len - 1
    n_train_w = min(len(order), math.ceil(args.sae_tokens / per_window))
    train_acts = collect_activations(model, train_windows[order[:n_train_w]])
    val_acts = collect_activations(model, val_windows)
    # dead-latent count: validation plus unused training windows, about dead_eval_tokens
    extra = max(0, math.ceil((args.dead_eval_tokens - len(val_acts)) / per_window))
    extra_windows = train_windows[order[n_train_w : n_train_w + extra]]
    dead_acts = torch.cat([val_acts, collect_activations(model, extra_windows)])
    act_seconds = time.perf_counter() - t_act
    log(
        f"activations: {len(train_acts)} train, {len(val_acts)} validation, "
        f"{len(dead_acts)} for dead count ({act_seconds:.0f}s); "
        f"mean norm {float(train_acts.norm(dim=1).mean()):.2f}"
    )

    sae, sae_stats = train_sae(train_acts, val_acts, args)
    dead_stats = evaluate_sae(sae, dead_acts)

    out_dir: Path = args.out_dir
    lm_dir = out_dir / "lm"
    sae_dir = out_dir / "sae" / HOOKPOINT
    for folder in (lm_dir, out_dir / "sae"):
        if folder.exists():
            shutil.rmtree(folder)
    lm_dir.mkdir(parents=True)
    model.to(torch.float32).save_pretrained(lm_dir, safe_serialization=True)
    tok.save_pretrained(lm_dir)
    # a class name that transformers 4.x resolves too (5.x maps it to its tokenizers backend)
    tok_cfg_path = lm_dir / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    tok_cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2) + "\n")
    save_sae(sae, sae_dir)

    summary: dict[str, object] = {
        "seed": args.seed,
        "script": "scripts/train_demo.py",
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "torch": torch.__version__,
        "data": "Python standard library source (autointerp.data.stdlib)",
        "vocab_size": len(tok),
        "ctx_len": args.ctx_len,
        "train_files": len(train_texts),
        "validation_files": len(val_texts),
        "train_tokens": int(train_stream.numel()),
        "validation_tokens": int(val_stream.numel()),
        "unigram_entropy": entropy,
        **lm_stats,
        "hookpoint": HOOKPOINT,
        "activation_seconds": act_seconds,
        **sae_stats,
        "dead_fraction": dead_stats["dead_fraction"],
        "dead_eval_tokens": int(dead_stats["n_tokens"]),
        "total_seconds": time.perf_counter() - t0,
    }
    (out_dir / "TRAINING.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"LM validation loss: {lm_stats['lm_val_loss']:.4f} nats/token "
        f"(unigram entropy {entropy:.3f})"
    )
    print(f"SAE validation FVU: {sae_stats['sae_val_fvu']:.4f}  L0: {sae_stats['sae_val_l0']:.1f}")
    print(
        f"SAE dead fraction: {dead_stats['dead_fraction']:.4f} "
        f"on {int(dead_stats['n_tokens'])} tokens"
    )
    print(f"total seconds: {summary['total_seconds']:.0f}")
    return summary


if __name__ == "__main__":
    main()
