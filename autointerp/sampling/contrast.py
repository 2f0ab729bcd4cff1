"""Contrast (non-activating) windows for every latent of a shard: random silent windows,
'similar' hard negatives (windows holding the latent's characteristic tokens) and neighbour
windows (top windows of the decoder-nearest latents). Every candidate is checked against the
cache: a window in which the latent fires anywhere is dropped, never labelled non-activating."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import polars as pl

from autointerp.sampling.config import SPLITS, SampleConfig
from autointerp.sampling.hashing import draw_index
from autointerp.sampling.windows import Geometry, fires_in_window

_TAG_RANDOM_SEQ, _TAG_RANDOM_POS, _TAG_SIMILAR = 21, 22, 23


@dataclass(frozen=True)
class ShardContext:
    """What contrast sources need about the shard being processed."""

    geo: Geometry
    nz_keys: np.ndarray  # Nonzeros.keys of the shard
    split_of_seq: np.ndarray  # int8 per seq_id
    cfg: SampleConfig
    seed: int

    def need(self, source: str) -> np.ndarray:
        return np.array([getattr(self.cfg.mix(s), source) for s in SPLITS], dtype=np.int64)

    def draws(self, source: str) -> int:
        """Candidates to draw per latent so that every split is likely filled."""
        need = self.need(source)
        per = [n / f for n, f in zip(need, self.cfg.split_fractions, strict=True) if n > 0]
        return math.ceil(self.cfg.oversample * max(per, default=0.0)) + 8 if per else 0


def window_keys(
    geo: Geometry, latent: np.ndarray, seq: np.ndarray, start: np.ndarray
) -> np.ndarray:
    """Unique int64 key of a (latent, seq_id, start) window."""
    return (latent.astype(np.int64) * geo.n_seqs + seq) * geo.ctx_len + start


def finish(
    ctx: ShardContext, source: str, cand: pl.DataFrame, taken: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Keep silent, distinct candidates; the first ``need`` per (latent, split) by ``order``.

    ``cand`` has latent, seq_id, start, order (+ optional source_latent, source_similarity);
    windows already in ``taken`` (latent, seq_id, start) for that latent are left out.
    Plain numpy: one window key per candidate, searchsorted for set tests, one lexsort.
    """
    if cand.height == 0:
        return _empty(source)
    geo = ctx.geo
    lat = cand["latent"].to_numpy().astype(np.int64)
    seq = cand["seq_id"].to_numpy().astype(np.int64)
    start = cand["start"].to_numpy().astype(np.int64)
    order = cand["order"].to_numpy().astype(np.float64)
    wk = window_keys(geo, lat, seq, start)
    split = ctx.split_of_seq[seq]
    need = ctx.need(source)
    keep = need[split] > 0
    if taken is not None and taken.height:
        tk = np.unique(
            window_keys(
                geo,
                taken["latent"].to_numpy(),
                taken["seq_id"].to_numpy(),
                taken["start"].to_numpy(),
            )
        )
        at = np.minimum(np.searchsorted(tk, wk), len(tk) - 1)
        keep &= tk[at] != wk
    idx = np.flatnonzero(keep)
    idx = idx[~fires_in_window(ctx.nz_keys, geo, lat[idx], seq[idx], start[idx])]
    idx = idx[np.lexsort((start[idx], seq[idx], order[idx], split[idx], lat[idx]))]
    _, first = np.unique(wk[idx], return_index=True)  # first occurrence in this order
    idx = idx[np.sort(first)]
    group = lat[idx] * len(SPLITS) + split[idx]
    if len(idx):
        bounds = np.flatnonzero(np.concatenate([[True], group[1:] != group[:-1]]))
        counts = np.diff(np.append(bounds, len(idx)))
        rank = np.arange(len(idx)) - np.repeat(bounds, counts)
        idx = idx[rank < need[split[idx]]]
    df = cand[idx]
    return df.select(
        pl.col("latent").cast(pl.Int32),
        pl.Series("split", np.array(SPLITS, dtype=object)[split[idx]], dtype=pl.String),
        pl.lit(source).alias("kind"),
        pl.lit(source).alias("sampler"),
        pl.lit(None, dtype=pl.Int8).alias("quantile"),
        pl.col("seq_id").cast(pl.Int32),
        pl.col("start").cast(pl.Int32),
        pl.col("order").cast(pl.Float64),
        *_source_cols(df),
    )


def _source_cols(df: pl.DataFrame) -> list[pl.Expr]:
    cols = []
    for name, dtype in (("source_latent", pl.Int32), ("source_similarity", pl.Float32)):
        expr = pl.col(name) if name in df.columns else pl.lit(None)
        cols.append(expr.cast(dtype).alias(name))
    return cols


def _empty(source: str) -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "latent": pl.Int32,
            "split": pl.String,
            "kind": pl.String,
            "sampler": pl.String,
            "quantile": pl.Int8,
            "seq_id": pl.Int32,
            "start": pl.Int32,
            "order": pl.Float64,
            "source_latent": pl.Int32,
            "source_similarity": pl.Float32,
        }
    )


def random_contrast(
    ctx: ShardContext, latents: np.ndarray, taken: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Uniformly random windows (any sequence, grid or uniform start; never over an excluded
    BOS) where it never fires."""
    r = ctx.draws("random")
    if r == 0 or len(latents) == 0:
        return _empty("random")
    lat = np.repeat(latents.astype(np.int64), r)
    j = np.tile(np.arange(r), len(latents))
    seq = draw_index(ctx.geo.n_seqs, ctx.seed, _TAG_RANDOM_SEQ, lat, j)
    if ctx.geo.placement == "aligned":
        blocks = draw_index(ctx.geo.n_blocks, ctx.seed, _TAG_RANDOM_POS, lat, j)
        start = ctx.geo.aligned_start(ctx.geo.first + blocks * ctx.geo.window_len)
    else:
        n_starts = ctx.geo.last_start - ctx.geo.first + 1
        start = ctx.geo.first + draw_index(n_starts, ctx.seed, _TAG_RANDOM_POS, lat, j)
    cand = pl.DataFrame({"latent": lat, "seq_id": seq, "start": start, "order": j.astype(float)})
    return finish(ctx, "random", cand, taken)


def _starts_counts(sorted_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(sorted_key) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_key[1:] != sorted_key[:-1]]))
    return starts, np.diff(np.append(starts, len(sorted_key)))


class TokenIndex:
    """Inverted index token -> flat positions (CSR), and per-token idf over the cache."""

    def __init__(self, tokens: np.ndarray) -> None:
        flat = tokens.reshape(-1)
        self.ctx_len = tokens.shape[1]
        dtype = np.int32 if flat.size < 2**31 else np.int64
        self.positions = np.argsort(flat, kind="stable").astype(dtype)
        counts = np.bincount(flat)
        self.offsets = np.concatenate([[0], np.cumsum(counts)])
        self.counts = counts
        self.idf = np.log((flat.size + 1) / (counts + 1.0))


def _top_candidates(group: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """Indices of a superset of every group's top ``n`` scores (``group`` sorted): those at
    >= half their group's best score, or the whole group when that leaves fewer than ``n``."""
    if len(group) == 0:
        return np.zeros(0, dtype=np.int64)
    starts, counts = _starts_counts(group)
    strong = score >= np.repeat(np.maximum.reduceat(score, starts) * 0.5, counts)
    few = np.add.reduceat(strong.astype(np.int64), starts) < n
    return np.flatnonzero(strong | np.repeat(few, counts))


def characteristic_tokens(
    tokens: np.ndarray,
    index: TokenIndex,
    latent: np.ndarray,
    seq: np.ndarray,
    pos: np.ndarray,
    value: np.ndarray,
    n_tokens: int,
    max_bins: int = 1 << 18,
) -> pl.DataFrame:
    """Top ``n_tokens`` tokens per latent by activation-weighted count x idf at its firing
    positions (ties to the lower token id): columns latent, token, token_rank.

    A weighted bincount over (latent, token), in latent blocks of at most ``max_bins`` bins
    (small enough to stay in cache; at least one latent per block);
    only the pairs that occur are sorted.
    """
    vocab = len(index.idf)
    flat = seq.astype(np.int64) * tokens.shape[1] + pos
    tok = np.take(tokens.reshape(-1), flat).astype(np.int64)
    lats = np.unique(latent)
    frames = []
    per_block = max(1, max_bins // vocab)
    bounds = np.searchsorted(latent, lats[::per_block])
    bounds = np.append(bounds, len(latent))
    for b0, b1 in zip(bounds[:-1], bounds[1:], strict=True):
        block = np.unique(latent[b0:b1])
        local = np.searchsorted(block, latent[b0:b1])
        w = np.bincount(
            local * vocab + tok[b0:b1], weights=value[b0:b1], minlength=len(block) * vocab
        )
        nzw = np.flatnonzero(w)  # only (latent, token) pairs that occur
        blk, tk = nzw // vocab, nzw % vocab
        score = w[nzw] * index.idf[tk]
        sub = _top_candidates(blk, score, n_tokens)
        order = sub[np.lexsort((tk[sub], -score[sub], blk[sub]))]
        blk, tk, score = blk[order], tk[order], score[order]
        rank = np.arange(len(blk)) - np.repeat(*_starts_counts(blk))
        keep = (rank < n_tokens) & (score > 0)
        frames.append(
            pl.DataFrame(
                {
                    "latent": block[blk[keep]].astype(np.int32),
                    "token": tk[keep].astype(np.int64),
                    "token_rank": rank[keep].astype(np.int64),
                }
            )
        )
    if not frames:
        return pl.DataFrame(schema={"latent": pl.Int32, "token": pl.Int64, "token_rank": pl.Int64})
    return pl.concat(frames)


def similar_contrast(
    ctx: ShardContext, index: TokenIndex, char: pl.DataFrame, taken: pl.DataFrame | None = None
) -> pl.DataFrame:
    """Windows built around occurrences of the latent's characteristic tokens, yet silent.

    Occurrences are drawn at random per (latent, token); the most characteristic token's
    silent windows come first, the next token's fill what is left.
    """
    r = ctx.draws("similar")
    if char.height == 0 or r == 0:
        return _empty("similar")
    lat = np.repeat(char["latent"].to_numpy().astype(np.int64), r)
    tok = np.repeat(char["token"].to_numpy().astype(np.int64), r)
    trank = np.repeat(char["token_rank"].to_numpy(), r)
    j = np.tile(np.arange(r), char.height)
    k = draw_index(index.counts[tok], ctx.seed, _TAG_SIMILAR, lat, tok, j)
    flat = index.positions[index.offsets[tok] + k].astype(np.int64)
    seq, pos = flat // index.ctx_len, flat % index.ctx_len
    start = ctx.geo.start_for(pos, lat * ctx.geo.n_seqs + seq)
    cand = pl.DataFrame(
        {"latent": lat, "seq_id": seq, "start": start, "order": (trank * r + j).astype(float)}
    )
    return finish(ctx, "similar", cand, taken)


def neighbour_contrast(
    ctx: ShardContext,
    neighbours: pl.DataFrame,
    top_windows: pl.DataFrame,
    taken: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Top windows of each latent's decoder neighbours, round-robin over neighbours.

    ``neighbours``: latent, neighbour, nb_rank, cosine. ``top_windows``: latent, seq_id,
    start, win_rank (per latent, by max activation).
    """
    if neighbours.height == 0 or ctx.draws("neighbour") == 0:
        return _empty("neighbour")
    n_nb = int(neighbours["nb_rank"].max()) + 1
    cand = (
        neighbours.join(top_windows.rename({"latent": "neighbour"}), on="neighbour", how="inner")
        .with_columns(
            order=(pl.col("win_rank") * n_nb + pl.col("nb_rank")).cast(pl.Float64),
            source_latent=pl.col("neighbour"),
            source_similarity=pl.col("cosine"),
        )
        .select("latent", "seq_id", "start", "order", "source_latent", "source_similarity")
    )
    return finish(ctx, "neighbour", cand, taken)
