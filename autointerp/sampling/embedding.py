"""'similar' hard negatives by embedding: aligned windows of the cache are embedded once with a
Hugging Face model (mean-pooled last hidden state, L2-normalised); a latent's query is the mean
embedding of the blocks holding its activating peaks; the nearest silent windows are kept."""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import torch

from autointerp.sampling.contrast import ShardContext, finish
from autointerp.sampling.windows import window_tokens

log = logging.getLogger(__name__)


class WindowEmbeddings:
    """Embeddings of every aligned block (``seq_id``, ``start`` on the window grid)."""

    def __init__(
        self, model_name: str, tokens: np.ndarray, window_len: int, batch_size: int, device: str
    ) -> None:
        from transformers import AutoModel

        n_seqs, ctx_len = tokens.shape
        self.window_len = window_len
        self.n_blocks = -(-ctx_len // window_len)
        starts = np.minimum(np.arange(self.n_blocks) * window_len, ctx_len - window_len)
        self.seq = np.repeat(np.arange(n_seqs), self.n_blocks)
        self.start = np.tile(starts, n_seqs)
        model = AutoModel.from_pretrained(model_name).to(device).eval()
        windows = window_tokens(tokens, self.seq, self.start, window_len)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(windows), batch_size):
                batch = windows[lo : lo + batch_size]
                ids = torch.as_tensor(batch, dtype=torch.long, device=device)
                hidden = model(input_ids=ids).last_hidden_state.float().mean(dim=1)
                out.append(torch.nn.functional.normalize(hidden, dim=1).cpu())
        self.emb = torch.cat(out) if out else torch.zeros(0, 1)
        log.info("embedded %d windows with %s", len(windows), model_name)

    def block_index(self, seq: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Row of the aligned block holding token ``pos`` of ``seq``."""
        block = np.minimum(pos // self.window_len, self.n_blocks - 1)
        return seq.astype(np.int64) * self.n_blocks + block


def embedding_contrast(
    ctx: ShardContext,
    emb: WindowEmbeddings,
    activating: pl.DataFrame,
    taken: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Silent windows nearest (cosine) to the mean embedding of the latent's activating windows.

    ``activating``: the shard's activating rows (latent, seq_id, peak: the absolute position of
    each window's max; the aligned block holding it stands for the window).
    """
    r = ctx.draws("similar")
    if r == 0 or activating.height == 0:
        return finish(ctx, "similar", pl.DataFrame())
    p = activating
    rows = emb.block_index(p["seq_id"].to_numpy(), p["peak"].to_numpy())
    latents, inverse = np.unique(p["latent"].to_numpy(), return_inverse=True)
    q = torch.zeros(len(latents), emb.emb.shape[1])
    q.index_add_(0, torch.as_tensor(inverse), emb.emb[torch.as_tensor(rows)])
    q = torch.nn.functional.normalize(q, dim=1)
    k = min(4 * r + 64, emb.emb.shape[0])  # the nearest ones often fire: keep spares
    frames = []
    for lo in range(0, len(latents), 1024):
        vals, idx = torch.topk(q[lo : lo + 1024] @ emb.emb.T, k, dim=1)
        lat = np.repeat(latents[lo : lo + 1024], k)
        flat = idx.reshape(-1).numpy()
        frames.append(
            pl.DataFrame(
                {
                    "latent": lat,
                    "seq_id": emb.seq[flat],
                    "start": emb.start[flat],
                    "order": np.tile(np.arange(k), len(lat) // k).astype(float),
                    "source_similarity": vals.reshape(-1).numpy(),
                }
            )
        )
    return finish(ctx, "similar", pl.concat(frames), taken)
