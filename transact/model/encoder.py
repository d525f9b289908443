"""Realtime action-sequence encoders: TransAct and the baselines behind one interface.

Inputs (``B`` rows = candidates, ``S`` sequence slots, newest first, ``E`` = item embedding dim):

* ``seq_action_types`` ``(B, S)`` int64, 0 = padding
* ``seq_item_emb`` ``(B, S, E)`` float32, frozen pretrained content embeddings
* ``seq_timestamps_ms`` ``(B, S)`` int64
* ``request_time_ms`` ``(B,)`` int64
* ``cand_item_emb`` ``(B, E)`` float32

Output: ``(B, output_dim)`` with ``output_dim = (K + max_pool) * d`` (``d`` = token width),
plus :data:`SIMILARITY_POOL_DIM` columns with ``similarity_pool`` (:func:`similarity_pool`).

Which actions an encoder sees (:meth:`SequenceEncoder.visibility`), in this order:

1. *usable*: a real action (type > 0) strictly before ``request_time_ms``. Actions at or after
   the request are never visible, in training or inference (defensive against bad data);
   with ``actions="positive"`` only clicks and saves are usable.
2. only the newest ``seq_len`` usable actions are kept (the sequence-length ablation).
3. training only, when ``time_window_mask`` is on: per row draw ``T ~ U(0, time_window_ms)`` and
   hide every action with ``t_request - T < t < t_request``. **Never a whole row**: if the window
   would hide every kept action of a row, the oldest kept action stays visible.

Visible actions are then *compacted* to the front of the sequence (stable, so still newest
first): a hidden or unusable action is as if it never happened, and the first ``K`` output
columns are always the ``K`` newest visible actions. Invisible slots are zeroed and excluded
from attention (key padding mask), from the max pool and from the first ``K`` columns, so
their contents cannot reach the output.

Rows with no visible action at all (empty history): the transformer lets such rows attend over
their (all-zero) slots to stay finite and then the whole encoder output of the row is zeroed:
an empty history encodes to the zero vector (the ranker also gets ``has_history = 0``).
No NaN arises anywhere (tested).

``fusion="concat"`` (TransAct): token ``i`` = ``[action_emb(a_i), e_i, e_cand]`` (``d = A + 2E``).
``fusion="append"`` (BST): tokens ``[action_emb(a_i), e_i]`` plus one candidate token
``[0, e_cand]`` placed at position 0 (``d = A + E``); it is always visible, so it takes one of
the first ``K`` output columns. ``positional="learned"`` adds a learned embedding of the
(compacted) position.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transact.model.config import ACTION_AGE_EDGES_MIN, SIMILARITY_POOL_DIM, EncoderConfig
from transact.schema import N_ACTION_CODES, ActionType


class TransformerLayer(nn.Module):
    """Post-norm transformer encoder layer (ReLU FFN), parameter-compatible with
    ``nn.TransformerEncoderLayer(batch_first=True, norm_first=False)``.

    ``forward(tokens (B, L, d), attend (B, L) bool) -> (B, L, d)``; ``attend[b, j]`` False
    removes key ``j`` from every query's attention in row ``b``.
    """

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout_p = dropout
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.linear1 = nn.Linear(d_model, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def attention(self, qkv: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """``qkv`` ``(B, L, 3d)`` projected tokens -> attention output ``(B, L, d)``."""
        batch, length, three_d = qkv.shape
        head_dim = three_d // (3 * self.num_heads)
        qkv = qkv.view(batch, length, 3, self.num_heads, head_dim).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=attend[:, None, None, :],
            dropout_p=self.dropout_p if self.training else 0.0,
        )
        return attn.transpose(1, 2).reshape(batch, length, three_d // 3)

    def finish(self, tokens: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Residual + norm + feed-forward after attention: ``(B, L, d)`` -> ``(B, L, d)``."""
        hidden = self.norm1(tokens + self.dropout(self.out_proj(attn)))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(hidden))))
        return self.norm2(hidden + self.dropout(ffn))

    def forward(self, tokens: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        return self.finish(tokens, self.attention(self.in_proj(tokens), attend))


class SequenceEncoder(nn.Module):
    """TransAct (``kind="transformer"``) and baseline encoders; see the module docstring."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.output_dim = cfg.output_dim
        self.mask_generator: torch.Generator | None = None
        self.pool_proj: nn.Linear | None = None
        if cfg.kind == "none":
            return
        d = cfg.d_model
        self.action_emb = nn.Embedding(N_ACTION_CODES, cfg.action_emb_dim, padding_idx=0)
        with torch.no_grad():  # N(0, action_emb_std): comparable to the item vectors' scale
            self.action_emb.weight.normal_(0.0, cfg.action_emb_std)
            self.action_emb.weight[0] = 0.0
        self.pos_emb = (nn.Embedding(cfg.max_positions, d) if cfg.positional == "learned"
                        else None)
        self.age_emb: nn.Embedding | None = None
        if cfg.action_age:
            self.age_emb = nn.Embedding(len(ACTION_AGE_EDGES_MIN) + 1, cfg.action_emb_dim)
            nn.init.normal_(self.age_emb.weight, 0.0, cfg.action_emb_std)
            self.register_buffer("age_edges_ms", torch.tensor(
                [edge * 60_000.0 for edge in ACTION_AGE_EDGES_MIN], dtype=torch.float64),
                persistent=False)
        if cfg.similarity_pool and cfg.similarity_pool_learned:
            self.pool_proj = nn.Linear(cfg.item_emb_dim, cfg.item_emb_dim, bias=False)
            with torch.no_grad():
                self.pool_proj.weight.copy_(torch.eye(cfg.item_emb_dim))
        if cfg.kind == "transformer":
            self.layers = nn.ModuleList(
                TransformerLayer(d, cfg.num_heads, cfg.ffn_dim, cfg.dropout)
                for _ in range(cfg.num_layers))
        elif cfg.kind == "cnn":
            self.convs = nn.ModuleList(
                nn.Conv1d(d, d, cfg.cnn_kernel, padding=cfg.cnn_kernel // 2)
                for _ in range(cfg.num_layers))
        elif cfg.kind in ("rnn", "lstm"):
            rnn_cls = nn.LSTM if cfg.kind == "lstm" else nn.GRU
            self.rnn = rnn_cls(d, d, num_layers=cfg.num_layers, batch_first=True)

    def set_mask_seed(self, seed: int | None) -> None:
        """Draw the training time-window mask from a seeded generator (None: global RNG)."""
        self.mask_generator = None if seed is None else torch.Generator().manual_seed(seed)

    # ----------------------------------------------------------------------------- visibility
    def visibility(
        self,
        seq_action_types: torch.Tensor,
        seq_timestamps_ms: torch.Tensor,
        request_time_ms: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, S)`` bool: which slots the encoder sees (rules 1-3 of the module docstring).

        The time-window mask is drawn only in training mode.
        """
        cfg = self.cfg
        usable = self.usable(seq_action_types, seq_timestamps_ms, request_time_ms)
        if not (self.training and cfg.time_window_mask and cfg.time_window_ms > 0
                and cfg.time_window_mode == "drop"):
            return usable
        visible = usable & ~self._window_hidden(seq_timestamps_ms, request_time_ms)
        # never mask a whole row: keep the oldest usable action of rows the window emptied
        emptied = usable.any(dim=1) & ~visible.any(dim=1)
        slots = torch.arange(usable.shape[1], device=usable.device).expand_as(usable)
        oldest = torch.where(usable, slots, -1).max(dim=1).values
        keep_oldest = emptied[:, None] & (slots == oldest[:, None])
        return visible | keep_oldest

    def usable(
        self,
        seq_action_types: torch.Tensor,
        seq_timestamps_ms: torch.Tensor,
        request_time_ms: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, S)`` bool: rules 1-2 (real, strictly before the request, newest ``seq_len``)."""
        cfg = self.cfg
        usable = (seq_action_types > 0) & (seq_timestamps_ms < request_time_ms[:, None])
        if cfg.actions == "positive":
            usable &= (seq_action_types == int(ActionType.CLICK)) | (
                seq_action_types == int(ActionType.SAVE))
        rank = torch.cumsum(usable.to(torch.int32), dim=1) - 1
        limit = cfg.seq_len
        if self.training and cfg.train_seq_len is not None:
            limit = min(limit, cfg.train_seq_len)
        return usable & (rank < limit)

    def _window_hidden(self, seq_timestamps_ms: torch.Tensor, request_time_ms: torch.Tensor
                       ) -> torch.Tensor:
        """``(B, S)`` bool: slots inside this training step's random time window."""
        batch = seq_timestamps_ms.shape[0]
        window = torch.rand(batch, generator=self.mask_generator, dtype=torch.float64,
                            device=seq_timestamps_ms.device) * self.cfg.time_window_ms
        age_ms = (request_time_ms[:, None] - seq_timestamps_ms).to(torch.float64)
        return age_ms < window[:, None]

    def window_keys(
        self,
        seq_timestamps_ms: torch.Tensor,
        request_time_ms: torch.Tensor,
        visible: torch.Tensor,
        attend: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, L)`` bool attention keys for ``time_window_mode="keys"`` (training only).

        Actions inside the random window stay in the sequence (as queries, in the first-K
        columns and the max pool) but no token may attend to them; the newest action is always
        a key, so no row loses every key. Outside training (or with the mask off) the keys are
        ``attend``.
        """
        cfg = self.cfg
        if not (self.training and cfg.time_window_mask and cfg.time_window_ms > 0
                and cfg.time_window_mode == "keys" and cfg.kind == "transformer"):
            return attend
        length = attend.shape[1] - (1 if cfg.fusion == "append" else 0)
        order = torch.sort((~visible).to(torch.int8), dim=1, stable=True).indices[:, :length]
        hidden = self._window_hidden(torch.gather(seq_timestamps_ms, 1, order), request_time_ms)
        hidden[:, 0] = False
        if cfg.fusion == "append":
            hidden = torch.cat([hidden.new_zeros((hidden.shape[0], 1)), hidden], dim=1)
        return attend & ~hidden

    # -------------------------------------------------------------------------------- forward
    def forward(
        self,
        seq_action_types: torch.Tensor,
        seq_item_emb: torch.Tensor,
        seq_timestamps_ms: torch.Tensor,
        request_time_ms: torch.Tensor,
        cand_item_emb: torch.Tensor,
    ) -> torch.Tensor:
        batch = seq_action_types.shape[0]
        if self.cfg.kind == "none":
            return cand_item_emb.new_zeros((batch, 0))
        visible = self.visibility(seq_action_types, seq_timestamps_ms, request_time_ms)
        tokens, attend = self.tokens(seq_action_types, seq_item_emb, cand_item_emb, visible,
                                     seq_timestamps_ms, request_time_ms)
        keys = self.window_keys(seq_timestamps_ms, request_time_ms, visible, attend)
        encoded = self.encode_tokens(tokens, attend, keys)
        if not self.cfg.similarity_pool:
            return encoded
        pooled = self.pool_similarity(seq_action_types, seq_item_emb, seq_timestamps_ms,
                                      request_time_ms, cand_item_emb, visible)
        return torch.cat([encoded, pooled], dim=1)

    def pool_unit(self, item_emb: torch.Tensor) -> torch.Tensor:
        """``(..., E)`` -> unit vectors of the pool's metric (``P e`` when learned)."""
        if self.pool_proj is not None:
            item_emb = self.pool_proj(item_emb)
        return F.normalize(item_emb, dim=-1)

    def pool_similarity(
        self,
        seq_action_types: torch.Tensor,
        seq_item_emb: torch.Tensor,
        seq_timestamps_ms: torch.Tensor,
        request_time_ms: torch.Tensor,
        cand_item_emb: torch.Tensor,
        visible: torch.Tensor,
    ) -> torch.Tensor:
        """``(B, cfg.similarity_pool_dim)``: :func:`similarity_pool` of the visible slots.

        Sequence inputs may have batch size 1 (one shared sequence) and broadcast against
        ``cand_item_emb (B, E)``.
        """
        sim = (self.pool_unit(seq_item_emb)
               * self.pool_unit(cand_item_emb)[:, None, :]).sum(dim=2)  # (B, S)
        age_ms = request_time_ms[:, None] - seq_timestamps_ms
        recent = age_ms < self.cfg.similarity_recent_ms
        return similarity_pool(sim, seq_action_types, visible, recent,
                               self.cfg.similarity_pool_thresholds)

    @torch.no_grad()
    def forward_shared(
        self,
        seq_action_types: torch.Tensor,
        seq_item_emb: torch.Tensor,
        seq_timestamps_ms: torch.Tensor,
        request_time_ms: torch.Tensor,
        cand_item_emb: torch.Tensor,
        chunk_size: int = 100,
    ) -> torch.Tensor:
        """Eval-mode output for ONE request: one sequence, ``B`` candidates -> ``(B, output_dim)``.

        Inputs: ``seq_action_types (S,)``, ``seq_item_emb (S, E)``, ``seq_timestamps_ms (S,)``,
        ``request_time_ms`` scalar, ``cand_item_emb (B, E)``. Exactly equal (up to float
        rounding) to :meth:`forward` on ``B`` copies of the sequence, but with concat fusion the
        first layer's Q/K/V projection of the sequence part, ``W[:, :A+E] [a_i, e_i] + b``, is
        the same for every candidate: it is computed once, and each candidate adds only
        ``W[:, A+E:] e_cand`` (a ``(3d, E)`` product instead of ``L`` ``(3d, d)`` ones).
        Candidates are processed in chunks of ``chunk_size`` to stay cache-friendly.
        Other encoder kinds fall back to :meth:`forward`.
        """
        n_cand = cand_item_emb.shape[0]
        if self.cfg.kind != "transformer" or self.cfg.fusion != "concat" or self.training:
            rep = (n_cand,)
            return self.forward(seq_action_types.expand(*rep, -1),
                                seq_item_emb.expand(*rep, -1, -1),
                                seq_timestamps_ms.expand(*rep, -1),
                                request_time_ms.reshape(1).expand(*rep), cand_item_emb)
        cfg = self.cfg
        split = cfg.action_emb_dim + cfg.item_emb_dim
        visible = self.visibility(seq_action_types[None], seq_timestamps_ms[None],
                                  request_time_ms.reshape(1))
        seq_tokens, attend = self.tokens(seq_action_types[None], seq_item_emb[None],
                                         cand_item_emb.new_zeros((1, cand_item_emb.shape[1])),
                                         visible, seq_timestamps_ms[None],
                                         request_time_ms.reshape(1))
        first, rest = self.layers[0], self.layers[1:]
        qkv_seq = first.in_proj(seq_tokens)  # (1, L, 3d): shared by every candidate
        w_cand = first.in_proj.weight[:, split:split + cfg.item_emb_dim]  # (3d, E)
        raw_tokens = seq_tokens[0]
        if self.pos_emb is not None:  # the item channels without the learned positions
            positions = self.pos_emb.weight[: raw_tokens.shape[0]]
            raw_tokens = raw_tokens - positions * attend[0, :, None]
        seq_items = F.normalize(raw_tokens[:, cfg.action_emb_dim:split], dim=-1)  # (L, E)
        attend_keys = attend if bool(attend.any()) else torch.ones_like(attend)
        outputs = []
        for chunk in cand_item_emb.split(chunk_size):
            size = chunk.shape[0]
            qkv = qkv_seq + (chunk @ w_cand.T)[:, None, :]
            tokens = seq_tokens.expand(size, -1, -1).clone()
            tokens[:, :, split:split + cfg.item_emb_dim] += chunk[:, None, :] * attend[0, :, None]
            if cfg.candidate_similarity:
                sim = F.normalize(chunk, dim=-1) @ seq_items.T * attend[0]  # (size, L)
                qkv = qkv + sim[:, :, None] * first.in_proj.weight[:, -1]
                tokens[:, :, -1] += sim
            keys = attend_keys.expand(size, -1)
            hidden = first.finish(tokens, first.attention(qkv, keys))
            for layer in rest:
                hidden = layer(hidden, keys)
            encoded = compress(hidden, attend.expand(size, -1), self.cfg.first_k,
                               self.cfg.max_pool)
            if cfg.similarity_pool:
                encoded = torch.cat([encoded, self.pool_similarity(
                    seq_action_types[None], seq_item_emb[None], seq_timestamps_ms[None],
                    request_time_ms.reshape(1), chunk, visible)], dim=1)
            outputs.append(encoded)
        return torch.cat(outputs) if outputs else cand_item_emb.new_zeros((0, self.output_dim))

    def tokens(
        self,
        seq_action_types: torch.Tensor,
        seq_item_emb: torch.Tensor,
        cand_item_emb: torch.Tensor,
        visible: torch.Tensor,
        seq_timestamps_ms: torch.Tensor | None = None,
        request_time_ms: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compact visible actions to the front and build tokens.

        ``seq_timestamps_ms (B, S)`` and ``request_time_ms (B,)`` are needed with
        ``action_age`` (the age embedding is added to the action channels). Returns
        ``tokens (B, L, d)`` (invisible slots zeroed) and ``attend (B, L)`` bool, where
        ``L = max(#visible in the batch, 1)`` (+1 for the appended candidate token).
        """
        cfg = self.cfg
        n_visible = visible.sum(dim=1)
        length = max(int(n_visible.max()) if visible.numel() else 0, 1)
        order = torch.sort((~visible).to(torch.int8), dim=1, stable=True).indices[:, :length]
        actions = torch.gather(seq_action_types, 1, order)
        items = torch.gather(
            seq_item_emb, 1, order[:, :, None].expand(-1, -1, seq_item_emb.shape[2]))
        attend = torch.arange(length, device=visible.device)[None, :] < n_visible[:, None]
        actions = actions * attend
        action_part = self.action_emb(actions)
        if self.age_emb is not None:
            if seq_timestamps_ms is None or request_time_ms is None:
                raise ValueError("action_age needs seq_timestamps_ms and request_time_ms")
            age_ms = (request_time_ms[:, None] - torch.gather(seq_timestamps_ms, 1, order)
                      ).to(torch.float64)
            bucket = torch.bucketize(age_ms, self.age_edges_ms, right=True)
            action_part = action_part + self.age_emb(bucket) * attend[:, :, None]
        seq_tokens = [action_part, items * attend[:, :, None]]
        if cfg.fusion == "concat":
            seq_tokens.append(cand_item_emb[:, None, :].expand(-1, length, -1))
            if cfg.candidate_similarity:  # cos(e_i, e_cand): one more channel per token
                seq_tokens.append((F.normalize(items, dim=-1)
                                   * F.normalize(cand_item_emb, dim=-1)[:, None, :]
                                   ).sum(dim=2, keepdim=True))
            tokens = torch.cat(seq_tokens, dim=2) * attend[:, :, None]
        else:
            body = torch.cat(seq_tokens, dim=2)
            cand = torch.cat(
                [cand_item_emb.new_zeros((cand_item_emb.shape[0], cfg.action_emb_dim)),
                 cand_item_emb], dim=1)
            tokens = torch.cat([cand[:, None, :], body], dim=1)
            attend = torch.cat([attend.new_ones((attend.shape[0], 1)), attend], dim=1)
        if self.pos_emb is not None:
            tokens = tokens + self.pos_emb.weight[: tokens.shape[1]][None] * attend[:, :, None]
        return tokens, attend

    def encode_tokens(self, tokens: torch.Tensor, attend: torch.Tensor,
                      keys: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens (B, L, d)``, ``attend (B, L)`` -> compressed output ``(B, output_dim)``.

        ``keys`` ``(B, L)`` (transformer only; default ``attend``): the slots tokens may attend
        to, a subset of ``attend`` (see :meth:`window_keys`).
        """
        cfg = self.cfg
        mask = attend[:, :, None].to(tokens.dtype)
        has_any = attend.any(dim=1)
        if cfg.kind == "avg":
            return (tokens * mask).sum(dim=1) / attend.sum(dim=1).clamp(min=1)[:, None]
        if cfg.kind == "transformer":
            # empty rows attend over their zero slots (finite), and are zeroed below
            attend_keys = (attend if keys is None else keys) | ~has_any[:, None]
            hidden = tokens
            for layer in self.layers:
                hidden = layer(hidden, attend_keys)
        elif cfg.kind == "cnn":
            hidden = tokens * mask
            for conv in self.convs:
                hidden = F.relu(conv(hidden.transpose(1, 2))).transpose(1, 2) * mask
        else:
            hidden = self._run_rnn(tokens, attend)
        return compress(hidden, attend, cfg.first_k, cfg.max_pool)

    def _run_rnn(self, tokens: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
        """Run the RNN oldest -> newest over each row's visible prefix; outputs newest first."""
        lengths = attend.sum(dim=1)
        slots = torch.arange(tokens.shape[1], device=tokens.device)[None, :]
        reverse = torch.where(slots < lengths[:, None], lengths[:, None] - 1 - slots, slots)
        index = reverse[:, :, None].expand(-1, -1, tokens.shape[2])
        oldest_first = torch.gather(tokens, 1, index)
        packed = nn.utils.rnn.pack_padded_sequence(
            oldest_first, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(
            out, batch_first=True, total_length=tokens.shape[1])
        return torch.gather(out, 1, index)


#: action types pooled by :func:`similarity_pool`, in column order
SIMILARITY_POOL_TYPES: tuple[int, ...] = (int(ActionType.CLICK), int(ActionType.SAVE),
                                          int(ActionType.HIDE))


def similarity_pool(sim: torch.Tensor, seq_action_types: torch.Tensor, visible: torch.Tensor,
                    recent: torch.Tensor, thresholds: tuple[float, ...] = ()) -> torch.Tensor:
    """Candidate-aware pooled features ``(B, SIMILARITY_POOL_DIM + 12 * len(thresholds))``.

    ``sim (B, S)``: ``cos(e_i, e_cand)`` per slot; ``seq_action_types``, ``visible`` and
    ``recent`` ``(B, S)`` or ``(1, S)`` (broadcast). For each scope (visible; visible and
    recent) and each action type of :data:`SIMILARITY_POOL_TYPES`: the max of ``sim``, its
    mean and ``log1p(sum(relu(sim)))`` (a soft count of similar actions) over the matching
    slots, 0 where none match; then, per threshold ``t`` of ``thresholds``, scope and action
    type, ``log1p(c)`` and ``c / n`` with ``c = sum(relu(sim - t)) / (1 - t)`` over the ``n``
    matching slots (a count and a share of close actions). Slot order does not matter.
    """
    columns = []
    # (mask, count, weights) per scope x action type, shared by the base and sharper columns
    matches = []
    for scope in (visible, visible & recent):
        for code in SIMILARITY_POOL_TYPES:
            match = scope & (seq_action_types == code)
            matches.append((match, match.sum(dim=1), match.to(sim.dtype)))
    for match, count, weights in matches:
        best = sim.masked_fill(~match, -math.inf).max(dim=1).values
        columns.append(torch.where(count > 0, best, torch.zeros_like(best)))
        columns.append((sim * weights).sum(dim=1) / count.clamp(min=1))
        columns.append(torch.log1p((sim.clamp(min=0.0) * weights).sum(dim=1)))
    for threshold in thresholds:
        close = (sim - threshold).clamp(min=0.0) / (1.0 - threshold)
        for _, count, weights in matches:
            total = (close * weights).sum(dim=1)
            columns.append(torch.log1p(total))
            columns.append(total / count.clamp(min=1))
    return torch.stack(columns, dim=1)


assert len(SIMILARITY_POOL_TYPES) * 2 * 3 == SIMILARITY_POOL_DIM


def compress(hidden: torch.Tensor, attend: torch.Tensor, first_k: int, max_pool: bool
             ) -> torch.Tensor:
    """Output compression: ``hidden (B, L, d)`` -> ``(B, (first_k + max_pool) * d)``.

    The first ``first_k`` columns (newest visible actions; zero beyond a row's visible count)
    flattened, then the max over visible positions (zero for a row with none).
    """
    batch, length, d = hidden.shape
    has_any = attend.any(dim=1)
    hidden = hidden * (attend & has_any[:, None])[:, :, None].to(hidden.dtype)
    parts = []
    if first_k:
        head = hidden[:, :first_k]
        if length < first_k:
            head = torch.cat([head, hidden.new_zeros((batch, first_k - length, d))], dim=1)
        parts.append(head.reshape(batch, first_k * d))
    if max_pool:
        pooled = hidden.masked_fill(~attend[:, :, None], -math.inf).max(dim=1).values
        parts.append(torch.where(has_any[:, None], pooled, torch.zeros_like(pooled)))
    return torch.cat(parts, dim=1)
