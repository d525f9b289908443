"""Pinnability: the multi-task ranker around the sequence encoder.

Features of one (user, candidate) row, concatenated into ``x0`` ``(B, D)``:

* categorical embeddings: ``surface_id`` (``n_surfaces`` x 8), hashed candidate item id
  (``item_id_buckets`` x 16), UTC hour of the request (24 x 8);
* normalised numeric features ``(B, 6)`` of the realtime sequence (see
  :mod:`transact.model.features`; dropped with ``use_sequence_stats=False``);
* the sequence encoder output ``(B, (K+1)*d)`` (nothing for ``kind="none"``);
* the batch (daily, PinnerFormer-style) user embedding ``(B, U)`` (``use_batch_user_emb``);
* candidate features: its content embedding ``(B, E)``.

Then full-rank DCN v2 cross layers ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l`` (``W_l`` is
``D x D``), stacked with an MLP (ReLU, dropout), and one logit per head (``HEADS`` order).
"""

from __future__ import annotations

import torch
from torch import nn

from transact.data.counters import N_COUNTER_FEATURES
from transact.errors import UserError
from transact.model.config import RankerConfig
from transact.model.encoder import SequenceEncoder
from transact.model.features import NUMERIC_FEATURES, RankingBatch


class CrossLayer(nn.Module):
    """Full-rank DCN v2 cross layer: ``(x0 (B, D), x (B, D)) -> x0 * (W x + b) + x``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class Pinnability(nn.Module):
    """``forward(batch) -> logits (B, H)``; ``predict(batch) -> probabilities (B, H)``."""

    def __init__(self, cfg: RankerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.encoder = SequenceEncoder(cfg.encoder)
        self.surface_emb = nn.Embedding(cfg.n_surfaces, cfg.surface_emb_dim)
        self.item_id_emb = nn.Embedding(cfg.item_id_buckets, cfg.item_id_emb_dim)
        self.hour_emb = nn.Embedding(24, cfg.hour_emb_dim)
        #: widths of the feature blocks of x0, in order (see :meth:`features`)
        self.block_dims = [cfg.surface_emb_dim + cfg.item_id_emb_dim + cfg.hour_emb_dim]
        if cfg.use_sequence_stats:
            self.block_dims.append(len(NUMERIC_FEATURES))
        if self.encoder.output_dim:
            self.block_dims.append(self.encoder.output_dim)
        if cfg.use_batch_user_emb:
            self.block_dims.append(cfg.user_emb_dim)
        self.block_dims.append(cfg.item_emb_dim)
        if cfg.use_engagement_counters:
            self.block_dims.append(N_COUNTER_FEATURES)
        self.input_dim = sum(self.block_dims)
        self.input_norm = (nn.LayerNorm(self.input_dim) if cfg.input_norm == "layer"
                           else nn.Identity())
        self.block_norms = (nn.ModuleList(nn.LayerNorm(w) for w in self.block_dims)
                            if cfg.input_norm == "block" else None)
        self.cross = nn.ModuleList(CrossLayer(self.input_dim) for _ in range(cfg.n_cross_layers))
        mlp: list[nn.Module] = []
        width = self.input_dim
        for hidden in cfg.mlp_dims:
            mlp += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = hidden
        self.mlp = nn.Sequential(*mlp)
        self.heads = nn.Linear(width, len(cfg.heads))

    def features(self, batch: RankingBatch, shared_sequence: bool = False) -> torch.Tensor:
        """``x0`` ``(B, D)``: every feature of the row, concatenated.

        ``shared_sequence=True`` (eval only): every row is a candidate of the same request
        (same user sequence and request time); the encoder then uses row 0's sequence and its
        exact shared first-layer rewrite (:meth:`SequenceEncoder.forward_shared`).
        """
        cfg = self.cfg
        n_surfaces = cfg.n_surfaces
        parts = [torch.cat([
            self.surface_emb(batch.surface_id.clamp(0, n_surfaces - 1)),
            self.item_id_emb(batch.cand_item_bucket),
            self.hour_emb(batch.hour_of_day),
        ], dim=1)]
        if cfg.use_sequence_stats:
            parts.append(batch.numeric)
        if self.encoder.output_dim and shared_sequence and not self.training:
            parts.append(self.encoder.forward_shared(
                batch.seq_action_types[0], batch.seq_item_emb[0], batch.seq_timestamps_ms[0],
                batch.request_time_ms[0], batch.cand_item_emb))
        elif self.encoder.output_dim:
            parts.append(self.encoder(batch.seq_action_types, batch.seq_item_emb,
                                      batch.seq_timestamps_ms, batch.request_time_ms,
                                      batch.cand_item_emb))
        if cfg.use_batch_user_emb:
            parts.append(batch.user_batch_emb)
        parts.append(batch.cand_item_emb)
        if cfg.use_engagement_counters:
            if batch.counters is None:
                raise UserError("this model reads engagement counters (use_engagement_counters) "
                                "but the batch has none: rebuild the examples with "
                                "`transact data examples` (engagement_counters on)")
            parts.append(batch.counters)
        if self.block_norms is not None:
            parts = [norm(part) for norm, part in zip(self.block_norms, parts, strict=True)]
        return torch.cat(parts, dim=1)

    def forward(self, batch: RankingBatch, shared_sequence: bool = False) -> torch.Tensor:
        """Logits ``(B, H)``; see :meth:`features` for ``shared_sequence``."""
        x0 = self.input_norm(self.features(batch, shared_sequence))
        x = x0
        for layer in self.cross:
            x = layer(x0, x)
        return self.heads(self.mlp(x))

    @torch.no_grad()
    def predict(self, batch: RankingBatch, shared_sequence: bool = False) -> torch.Tensor:
        """Probabilities ``(B, H)`` in eval mode (no time-window mask, no dropout)."""
        was_training = self.training
        self.eval()
        try:
            return torch.sigmoid(self(batch, shared_sequence))
        finally:
            self.train(was_training)
