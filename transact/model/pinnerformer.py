"""PinnerFormer (arXiv 2205.04507): the daily batch user model's towers and dense all-action loss.

The network of the batch stage, beside the ranker's (:mod:`transact.model.ranker`); its daily
job, data preparation, training loop and checkpoints are the stage
:mod:`training.pinnerformer`.

User tower: each of the user's latest ``L`` engagements becomes a token
``W_c · content_emb(item) + E_action(type) + W_t · time_features(log age)``; a learned
``[USER]`` token is prepended and a small pre-norm transformer encoder (no positional encoding:
recency enters through the time feature) runs over ``(B, 1 + L, d)``; the ``[USER]`` output goes
through a LayerNorm + Linear to ``out_dim`` and is L2-normalised.

Item tower: an MLP over the frozen 32-d content embedding (plus an optional hashed item-id
embedding), L2-normalised.

Loss (:func:`dense_all_action_loss`): every future positive ``(b, i)`` of a batch user ``b`` is a
softmax over the candidate set ``C`` = the batch's unique positive items plus uniformly drawn random
items (mixed negatives), with the user's *other* positives masked out of the denominator, a
learned (or fixed) temperature and an optional log-Q correction ``log E[#draws of item]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from transact.schema import HOUR_MS, N_ACTION_CODES

__all__ = ["N_ACTION_CODES", "N_TIME_FEATURES", "PinnerFormerModel", "PinnerFormerModelConfig",
           "dense_all_action_loss", "time_features"]
N_TIME_FEATURES = 7


@dataclass
class PinnerFormerModelConfig:
    """Architecture of the towers.

    d_model / n_layers / n_heads / ffn_dim / dropout: the user encoder.
    out_dim: size of the user and item embeddings (the daily feature is this wide).
    item_hidden: hidden width of the item MLP.
    item_id_buckets: > 0 adds a hashed item-id embedding (``id % buckets``) to the item tower
        and, projected, to the history tokens (memorises items beyond their noisy content;
        0 keeps both towers purely content-based, so unseen items embed too).
    temperature: initial (or fixed) softmax temperature; learn_temperature makes it trainable.
    """

    content_dim: int = 32
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 2
    ffn_dim: int = 64
    dropout: float = 0.1
    out_dim: int = 32
    item_hidden: int = 64
    item_id_buckets: int = 65_536
    temperature: float = 0.07
    learn_temperature: bool = True


def time_features(age_ms: torch.Tensor) -> torch.Tensor:
    """``(..., N_TIME_FEATURES)`` features of an action's age (``(...)`` ms before the cut-off).

    ``la = log1p(age in hours)``; features ``[la / 5, sin(k·la), cos(k·la) for k = 1..3]``.
    """
    log_age = torch.log1p(age_ms.clamp_min(0).to(torch.float32) / float(HOUR_MS))
    feats = [log_age / 5.0]
    for k in (1.0, 2.0, 3.0):
        feats.append(torch.sin(k * log_age))
        feats.append(torch.cos(k * log_age))
    return torch.stack(feats, dim=-1)


class PinnerFormerModel(nn.Module):
    """User tower + item tower over a frozen content-embedding table.

    Args:
        cfg: the architecture.
        item_content: ``(n_items + 1, content_dim)`` float32 content table, row 0 = padding. It is
            a non-persistent buffer: checkpoints hold only the learned weights, and a newer
            items table (new items) can be attached with :meth:`set_item_content`.
    """

    def __init__(self, cfg: PinnerFormerModelConfig, item_content: torch.Tensor) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.register_buffer("item_content", item_content.to(torch.float32), persistent=False)
        self.content_proj = nn.Linear(cfg.content_dim, d)
        self.action_emb = nn.Embedding(N_ACTION_CODES, d, padding_idx=0)
        self.time_proj = nn.Linear(N_TIME_FEATURES, d)
        self.user_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d, cfg.n_heads, cfg.ffn_dim, cfg.dropout, batch_first=True, norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.user_head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.out_dim))
        self.item_tower = nn.Sequential(
            nn.Linear(cfg.content_dim, cfg.item_hidden), nn.GELU(),
            nn.Linear(cfg.item_hidden, cfg.out_dim),
        )
        self.item_id_emb = (
            nn.Embedding(cfg.item_id_buckets, cfg.out_dim) if cfg.item_id_buckets > 0 else None
        )
        # history tokens share the item-id table (projected to d_model) when it exists
        self.history_id_proj = (
            nn.Linear(cfg.out_dim, d, bias=False) if self.item_id_emb is not None else None
        )
        if self.item_id_emb is not None:
            nn.init.normal_(self.item_id_emb.weight, std=0.01)
        log_inv_temp = torch.tensor(math.log(1.0 / cfg.temperature))
        if cfg.learn_temperature:
            self.log_inv_temp = nn.Parameter(log_inv_temp)
        else:
            self.register_buffer("log_inv_temp", log_inv_temp)

    def set_item_content(self, item_content: torch.Tensor) -> None:
        self.item_content = item_content.to(torch.float32)

    def _content(self, item_ids: torch.Tensor) -> torch.Tensor:
        """Content rows of ``item_ids`` (any shape); ids outside the table read row 0 (zeros)."""
        inside = item_ids < self.item_content.shape[0]
        return self.item_content[torch.where(inside, item_ids, torch.zeros_like(item_ids))]

    def encode_users(
        self, item_ids: torch.Tensor, actions: torch.Tensor, age_ms: torch.Tensor
    ) -> torch.Tensor:
        """``(B, out_dim)`` L2-normed user embeddings.

        Args:
            item_ids: ``(B, L)`` int64, 0 = padding.
            actions: ``(B, L)`` int64 ActionType codes, 0 = padding.
            age_ms: ``(B, L)`` int64 age of each action at the cut-off.
        """
        pad = actions == 0  # (B, L)
        tokens = (
            self.content_proj(self._content(item_ids))
            + self.action_emb(actions)
            + self.time_proj(time_features(age_ms))
        )  # (B, L, d)
        if self.item_id_emb is not None and self.history_id_proj is not None:
            ids = item_ids % self.cfg.item_id_buckets
            tokens = tokens + self.history_id_proj(self.item_id_emb(ids))
        tokens = tokens.masked_fill(pad.unsqueeze(-1), 0.0)
        batch = tokens.shape[0]
        seq = torch.cat([self.user_token.expand(batch, 1, -1), tokens], dim=1)  # (B, 1+L, d)
        pad = torch.cat([torch.zeros(batch, 1, dtype=torch.bool, device=pad.device), pad], dim=1)
        out = self.encoder(seq, src_key_padding_mask=pad)  # (B, 1+L, d)
        return F.normalize(self.user_head(out[:, 0]), dim=-1)

    def encode_items(self, item_ids: torch.Tensor) -> torch.Tensor:
        """``(N, out_dim)`` L2-normed item embeddings of ``item_ids`` ``(N,)``."""
        emb = self.item_tower(self._content(item_ids))
        if self.item_id_emb is not None:
            emb = emb + self.item_id_emb(item_ids % self.cfg.item_id_buckets)
        return F.normalize(emb, dim=-1)

    @property
    def inv_temperature(self) -> torch.Tensor:
        return self.log_inv_temp.clamp(max=math.log(100.0)).exp()


def dense_all_action_loss(
    user_emb: torch.Tensor,
    cand_emb: torch.Tensor,
    pair_user: torch.Tensor,
    pair_col: torch.Tensor,
    user_pos_mask: torch.Tensor,
    inv_temperature: torch.Tensor,
    log_q: torch.Tensor | None,
) -> torch.Tensor:
    """Sampled-softmax loss over all (user, future positive) pairs of a batch.

    Args:
        user_emb: ``(B, D)`` L2-normed user embeddings.
        cand_emb: ``(C, D)`` L2-normed candidate item embeddings.
        pair_user: ``(P,)`` the batch row of each positive pair.
        pair_col: ``(P,)`` the candidate column of each pair's item.
        user_pos_mask: ``(B, C)`` True where a candidate is one of the user's positives; those
            columns other than the pair's own are removed from the pair's denominator.
        inv_temperature: scalar ``1 / tau``.
        log_q: ``(C,)`` log expected draws of each candidate (log-Q correction) or None.

    Returns: scalar mean cross-entropy over the ``P`` pairs.
    """
    logits = (user_emb @ cand_emb.T) * inv_temperature  # (B, C)
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    pair_logits = logits[pair_user]  # (P, C)
    other_pos = user_pos_mask[pair_user].clone()
    other_pos[torch.arange(len(pair_col)), pair_col] = False
    pair_logits = pair_logits.masked_fill(other_pos, float("-inf"))
    return F.cross_entropy(pair_logits, pair_col)
